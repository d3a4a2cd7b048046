"""Attention masks seen at the op level: which query rows of which samples have no key to attend to."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["MASK_CONSUMERS", "fully_masked", "is_mask_consumer"]

# Ops that legitimately take -inf additive masks: an all -inf row is the failure, a partly -inf row is not.
MASK_CONSUMERS = (
    "aten._softmax", "aten.softmax", "aten._safe_softmax", "aten._log_softmax", "aten.log_softmax",
    "aten.logsumexp", "aten._native_multi_head_attention", "aten._transformer_encoder_layer_fwd",
    "aten._scaled_dot_product", "aten.scaled_dot_product_attention", "aten._masked_softmax",
)


def is_mask_consumer(op: str) -> bool:
    return op.startswith(MASK_CONSUMERS)


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


def _masked_from(mask: torch.Tensor, true_means_masked: bool) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return mask if true_means_masked else ~mask
    return mask == float("-inf")


def _per_sample(rows: torch.Tensor, batch: int) -> dict[int, list[int]]:
    """``rows``: bool (N, ..., L) with N == batch or a multiple of it (batch-major heads). Returns
    sample -> sorted query positions that are fully masked (in any head)."""
    if rows.dim() == 0 or batch <= 0:
        return {}
    n = rows.shape[0]
    if n != batch:
        if n % batch:
            return {}
        rows = rows.reshape(batch, n // batch, *rows.shape[1:])
    if rows.dim() == 1:
        rows = rows.unsqueeze(-1)
    flat = rows.reshape(batch, -1, rows.shape[-1]).any(dim=1)  # (B, L)
    found: dict[int, list[int]] = {}
    for s, pos in flat.nonzero().tolist():
        found.setdefault(int(s), []).append(int(pos))
    return found


def _attention_mask(masked: torch.Tensor, batch: int, length: int, keys: int) -> dict[int, list[int]]:
    """A mask of MHA/encoder-layer style: (L, S), (B, S) key padding, or (B, H, L, S)."""
    if masked.dim() == 2 and masked.shape == (batch, keys) and not (masked.shape == (length, keys) and batch == length):
        full = masked[:, None, :].expand(batch, length, keys)
    elif masked.dim() == 2:
        full = masked[None].expand(batch, *masked.shape)
    else:
        full = masked
    return _per_sample(full.all(dim=-1), batch)


def fully_masked(op: str, args: tuple[Any, ...], kwargs: dict[str, Any], batch: int | None) -> dict[int, list[int]]:
    """For an attention or softmax op call: sample -> query positions whose keys are all masked."""
    if not batch:
        return {}
    try:
        return _fully_masked(op, args, kwargs, batch)
    except (RuntimeError, IndexError, ValueError, TypeError):
        return {}


def _fully_masked(op: str, args: tuple[Any, ...], kwargs: dict[str, Any], batch: int) -> dict[int, list[int]]:
    if op.startswith("aten._native_multi_head_attention"):
        query, key, mask = args[0], args[1], _arg(args, kwargs, 9, "mask")
        if not isinstance(mask, torch.Tensor) or query.is_nested:
            return {}
        return _attention_mask(_masked_from(mask, True), batch, query.shape[-2], key.shape[-2])
    if op.startswith("aten._transformer_encoder_layer_fwd"):
        src, mask = args[0], _arg(args, kwargs, 18, "mask")
        if not isinstance(mask, torch.Tensor) or src.is_nested:
            return {}
        return _attention_mask(_masked_from(mask, True), batch, src.shape[-2], src.shape[-2])
    if op.startswith(("aten._scaled_dot_product", "aten.scaled_dot_product_attention")):
        query, key = args[0], args[1]
        mask = kwargs.get("attn_mask", kwargs.get("attn_bias"))
        if mask is None and len(args) > 3 and isinstance(args[3], torch.Tensor):
            mask = args[3]
        if not isinstance(mask, torch.Tensor):
            return {}
        masked = _masked_from(mask, False).expand(*query.shape[:-1], key.shape[-2])
        return _per_sample(masked.all(dim=-1), batch)
    if op.startswith(("aten._softmax", "aten.softmax", "aten._safe_softmax", "aten._log_softmax",
                      "aten.log_softmax", "aten._masked_softmax")):
        x, dim = args[0], args[1]
        if not isinstance(x, torch.Tensor) or x.is_nested or x.dim() < 2 or not x.is_floating_point():
            return {}
        if op.startswith("aten._masked_softmax"):
            mask = args[1]
            dim = _arg(args, kwargs, 2, "dim")
            masked = mask.expand_as(x) if mask.dim() == x.dim() else mask
            rows = masked.all(dim=dim if dim is not None else -1)
        else:
            rows = (x == float("-inf")).all(dim=int(dim))
        if rows.dim() == 0:
            return {}
        return _per_sample(rows, batch)
    return {}
