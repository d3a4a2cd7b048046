"""Extra facts recorded for layers that matter: attention masks, dropout, LayerNorm.

Each helper runs in the forward pre-hook (it sees the call's args and kwargs) and returns a small dict of
scalars or short lists that goes to ``CallRecord.extra``. Costly facts are deferred: the helper puts a
callable under :data:`DEFERRED`, which the post-hook runs only when the call's output is non-finite (on the
CPU; always on other devices). So ``fully_masked_rows`` appears on attention records whose output was
non-finite, and a LayerNorm's ``min_input_var`` on the records of its sampled calls (see :data:`LN_EVERY`)
and of its non-finite ones. Attention extras for custom modules that call
``scaled_dot_product_attention`` or a softmax inline are not collected (no cheap hook point).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["DEFERRED", "LN_EVERY", "extra_for", "fully_masked_rows", "min_row_variance"]

DEFERRED = "_deferred"

Extractor = Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], dict[str, Any]]


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], pos: int, name: str) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[pos] if len(args) > pos else None


def _describe(mask: Any) -> str | None:
    if not isinstance(mask, torch.Tensor):
        return None
    return f"{str(mask.dtype).removeprefix('torch.')}{tuple(mask.shape)}"


def _masked(mask: torch.Tensor) -> torch.Tensor:
    """Boolean "this position may not be attended" (bool: True; float: -inf)."""
    if mask.dtype == torch.bool:
        return mask
    return mask == float("-inf")


def fully_masked_rows(key_padding_mask: torch.Tensor | None, attn_mask: torch.Tensor | None,
                      batch: int, queries: int, keys: int, is_causal: bool = False) -> list[int] | None:
    """Number of query rows per sample whose keys are all masked (per head summed for 3-D masks).

    ``key_padding_mask`` is ``(B, S)``; ``attn_mask`` is ``(L, S)`` or ``(B * heads, L, S)``. Returns
    ``None`` when there is no mask.
    """
    if key_padding_mask is None and attn_mask is None and not is_causal:
        return None
    combined: torch.Tensor | None = None
    if key_padding_mask is not None:
        combined = _masked(key_padding_mask).reshape(batch, 1, keys)
    if attn_mask is not None:
        am = _masked(attn_mask)
        am = am.reshape(1, queries, keys) if am.dim() == 2 else am.reshape(batch, -1, keys)
        combined = am if combined is None else combined | am
    elif is_causal:
        causal = torch.ones(queries, keys, dtype=torch.bool, device=_device(key_padding_mask)).triu(1)
        combined = causal[None] if combined is None else combined | causal[None]
    assert combined is not None
    per_sample = combined.all(dim=-1).sum(dim=-1)
    if combined.shape[-2] == 1 and queries > 1:  # a padding mask alone masks every query row alike
        per_sample = per_sample * queries
    if per_sample.numel() == 1 and batch > 1:
        per_sample = per_sample.expand(batch)
    return [int(v) for v in per_sample.tolist()]


def _device(t: torch.Tensor | None) -> torch.device | None:
    return t.device if t is not None else None


def _mha(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(module, nn.MultiheadAttention)
    query, key = _arg(args, kwargs, 0, "query"), _arg(args, kwargs, 1, "key")
    kpm, am = _arg(args, kwargs, 3, "key_padding_mask"), _arg(args, kwargs, 5, "attn_mask")
    is_causal = bool(_arg(args, kwargs, 7, "is_causal"))
    return _attention_extra(module, query, key, kpm, am, is_causal, module.batch_first)


def _encoder_layer(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(module, nn.TransformerEncoderLayer)
    src = _arg(args, kwargs, 0, "src")
    am, kpm = _arg(args, kwargs, 1, "src_mask"), _arg(args, kwargs, 2, "src_key_padding_mask")
    is_causal = bool(_arg(args, kwargs, 3, "is_causal"))
    return _attention_extra(module.self_attn, src, src, kpm, am, is_causal, module.self_attn.batch_first)


def _attention_extra(module: nn.Module, query: Any, key: Any, kpm: Any, am: Any, is_causal: bool,
                     batch_first: bool) -> dict[str, Any]:
    extra: dict[str, Any] = {"key_padding_mask": _describe(kpm), "attn_mask": _describe(am),
                             "is_causal": is_causal, "training": module.training}
    if not isinstance(query, torch.Tensor) or not isinstance(key, torch.Tensor) or query.dim() != 3:
        return extra
    if query.is_nested or key.is_nested:  # an encoder's fast path packs padded self-attention input
        if not isinstance(kpm, torch.Tensor) or kpm.dim() != 2:
            return extra
        batch, keys = kpm.shape
        queries = keys
    else:
        b_dim, l_dim = (0, 1) if batch_first else (1, 0)
        batch, queries, keys = query.shape[b_dim], query.shape[l_dim], key.shape[l_dim]
    extra[DEFERRED] = lambda: _masked_rows_extra(kpm, am, batch, queries, keys, is_causal)
    return extra


def _masked_rows_extra(kpm: Any, am: Any, batch: int, queries: int, keys: int, is_causal: bool) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    try:
        rows = fully_masked_rows(kpm if isinstance(kpm, torch.Tensor) else None,
                                 am if isinstance(am, torch.Tensor) else None, batch, queries, keys, is_causal)
    except RuntimeError:  # a mask shape we do not understand: say nothing rather than guess
        rows = None
    if rows is not None:
        extra["fully_masked_rows"] = rows
        extra["fully_masked_samples"] = [i for i, n in enumerate(rows) if n]
    return extra


def _dropout(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    p = float(getattr(module, "p", 0.0))
    return {"p": p, "active": bool(module.training and p > 0)}


def _layer_norm(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], measure: bool = True
                ) -> dict[str, Any]:
    """``eps``, and ``min_input_var`` now (``measure``) or deferred to a non-finite output."""
    assert isinstance(module, nn.LayerNorm)
    extra: dict[str, Any] = {"eps": module.eps}
    x = _arg(args, kwargs, 0, "input")
    size = math.prod(module.normalized_shape)
    if isinstance(x, torch.Tensor) and x.dtype.is_floating_point and x.numel() and size:
        if measure:
            extra["min_input_var"] = min_row_variance(x, size)
        else:
            extra[DEFERRED] = lambda: {"min_input_var": min_row_variance(x, size)}
    return extra


LN_EVERY = 16
"""Under a probe, a LayerNorm's smallest input variance (two passes over its input) is measured on every
``LN_EVERY``-th call of the module, the first one included, and on every call whose output is non-finite."""


def _sampled_layer_norm() -> Extractor:
    calls = 0

    def extract(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return _layer_norm(module, args, kwargs, measure=(calls - 1) % LN_EVERY == 0)

    return extract


def min_row_variance(x: torch.Tensor, size: int) -> float | torch.Tensor:
    """Smallest population variance over the rows of ``size`` trailing values of ``x`` (E[x^2] - E[x]^2,
    clamped at 0). A float on the CPU; off the CPU a 0-d tensor the probe reads back with the stats."""
    rows = x.detach().reshape(-1, size)
    rows = rows if rows.dtype in (torch.float32, torch.float64) else rows.float()
    mean = torch.mv(rows, _mean_weights(size, rows.dtype, rows.device))
    var = torch.linalg.vector_norm(rows, dim=1).square_().div_(size).sub_(mean.square_())
    smallest = var.amin()
    if smallest.device.type == "cpu":
        value = smallest.item()
        return value if value > 0.0 else 0.0 if value == value else value
    return smallest.clamp(min=0.0)


_weights: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _mean_weights(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (size, dtype, device)
    w = _weights.get(key)
    if w is None:
        if len(_weights) > 64:
            _weights.clear()
        w = _weights[key] = torch.full((size,), 1.0 / size, dtype=dtype, device=device)
    return w


_EXTRACTORS: tuple[tuple[type[nn.Module], Extractor], ...] = (
    (nn.MultiheadAttention, _mha),
    (nn.TransformerEncoderLayer, _encoder_layer),
    (nn.modules.dropout._DropoutNd, _dropout),
    (nn.LayerNorm, _layer_norm),
)


def extra_for(module: nn.Module) -> Extractor | None:
    """The extractor for this module's type, or ``None`` (decided once, when the hook is attached)."""
    for cls, fn in _EXTRACTORS:
        if isinstance(module, cls):
            return _sampled_layer_norm() if fn is _layer_norm else fn
    return None

