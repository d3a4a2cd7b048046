"""The replay matrix: the same batch, the same RNG, one switch flipped at a time."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nanprobe.batches import cast_floating
from nanprobe.execution import Mode
from nanprobe.sentinel import tensor_leaves

__all__ = ["Replay", "dropout_sites", "model_dtypes", "plan_replays", "upcast_in_place", "upcast_model",
           "zero_dropout"]

_HALF = (torch.float16, torch.bfloat16)
_ATTN_TYPES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


@dataclass
class Replay:
    """One planned replay of the failing batch: what changes, how to run it, or why it was skipped."""

    key: str
    label: str
    changes: dict[str, Any]
    mode: Mode | None = None
    grad: bool | None = None
    contexts: tuple[Callable[[], contextlib.AbstractContextManager[Any]], ...] = ()
    batch_fn: Callable[[Any], Any] | None = None
    model_fn: Callable[[], nn.Module] | None = None
    skipped: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    fallback: Callable[[], contextlib.AbstractContextManager[Any]] | None = None  # when model_fn fails
    dtype: torch.dtype | None = None  # a replay in another dtype
    local: bool = False
    """The replay needs only the origin's neighbourhood: it runs a copy of the producing module alone, on
    the inputs recorded during localization (never a copy of the whole model)."""


def dropout_sites(model: nn.Module) -> list[tuple[str, nn.Module, str, float]]:
    """(module name, module, attribute, p) for every dropout probability in the model: ``nn.Dropout*``'s
    ``p``, ``nn.MultiheadAttention``'s ``dropout``, and float attributes named like ``*dropout*``/``*drop_p*``
    on custom modules (passed to ``F.dropout`` / ``scaled_dot_product_attention``)."""
    sites: list[tuple[str, nn.Module, str, float]] = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            sites.append((name, m, "p", float(m.p)))
            continue
        for attr, value in vars(m).items():
            if attr.startswith("_") or isinstance(value, bool) or not isinstance(value, float):
                continue
            low = attr.lower()
            if ("dropout" in low or low in ("drop_p", "drop_prob", "attn_drop", "p_drop", "dropout_p")) and \
                    0.0 <= value < 1.0:
                sites.append((name, m, attr, value))
    return sites


@contextlib.contextmanager
def zero_dropout(model: nn.Module) -> Iterator[list[str]]:
    """Every dropout probability at 0, restored exactly afterwards (also on exceptions)."""
    sites = dropout_sites(model)
    try:
        for _, m, attr, _ in sites:
            setattr(m, attr, 0.0)
        yield [n for n, *_ in sites]
    finally:
        for _, m, attr, value in sites:
            setattr(m, attr, value)


def model_dtypes(model: nn.Module, batch: Any) -> set[torch.dtype]:
    found = {p.dtype for p in model.parameters() if p.is_floating_point()}
    found |= {b.dtype for b in model.buffers() if b.is_floating_point()}
    found |= {t.dtype for _, t in tensor_leaves(batch) if t.is_floating_point()}
    return found


def upcast_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` in ``dtype`` (floating parameters and buffers only); the original is untouched."""
    clone = copy.deepcopy(model)
    return clone.to(dtype)


@contextlib.contextmanager
def upcast_in_place(model: nn.Module, dtype: torch.dtype) -> Iterator[nn.Module]:
    """``model`` itself cast to ``dtype`` for the block, then given back its original tensors (the very
    same storages, so the state_dict is bitwise what it was) — for models that cannot be deep-copied."""
    params = [(p, p.data) for p in model.parameters()]
    buffers = [(m, name, b) for m in model.modules() for name, b in m._buffers.items() if b is not None]
    try:
        model.to(dtype)
        yield model
    finally:
        for p, data in params:
            p.data = data
        for m, name, b in buffers:
            m._buffers[name] = b


def _has(model: nn.Module, types: tuple[type, ...]) -> bool:
    return any(isinstance(m, types) for m in model.modules())


def _autocast_devices() -> list[str]:
    found = []
    for device in ("cpu", "cuda"):
        try:
            if torch.is_autocast_enabled(device):
                found.append(device)
        except (TypeError, RuntimeError):
            continue
    return found


def _mha_off() -> contextlib.AbstractContextManager[Any]:
    torch.backends.mha.set_fastpath_enabled(False)  # preserved_globals restores it
    return contextlib.nullcontext()


def _sdpa_math() -> contextlib.AbstractContextManager[Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _autocast_off(devices: list[str]) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    def make() -> contextlib.AbstractContextManager[Any]:
        stack = contextlib.ExitStack()
        for d in devices:
            stack.enter_context(torch.autocast(device_type=d, enabled=False))
        return stack
    return make


def plan_replays(model: nn.Module, batch: Any, *, mode: Mode, backward: bool,
                 ops_seen: set[str]) -> list[Replay]:
    """The replays in priority order; those that cannot apply come back with ``skipped`` set."""
    out: list[Replay] = []
    other = mode.other
    # only the train/eval flag flips: grad stays as the failing run had it (no autograd graph for nothing)
    out.append(Replay("mode", f"{other} mode", {"mode": other.value}, mode=other,
                      grad=mode is Mode.TRAIN or backward))

    sites = [s for s in dropout_sites(model) if s[3] > 0]
    drop = Replay("dropout", "dropout p=0", {"dropout_p": 0.0},
                   contexts=(lambda: zero_dropout(model),), extra={"sites": [(n, a, p) for n, _, a, p in sites]})
    if not sites:
        drop.skipped = "no dropout in model"
    # In eval mode dropout is already off, and the run says so with evidence ("dropout p=0 -> still NaN"):
    # one pass that settles the most common wrong story about a NaN.
    out.append(drop)

    has_attn = _has(model, _ATTN_TYPES)
    fast = Replay("fastpath", "fast path off", {"mha_fastpath": False}, contexts=(_mha_off,))
    if not has_attn:
        fast.skipped = "no nn.MultiheadAttention/TransformerEncoderLayer"
    elif mode is Mode.TRAIN or backward:
        fast.skipped = "fast path not taken with grad/train mode"
    out.append(fast)

    dtypes = model_dtypes(model, batch)
    half = any(d in _HALF for d in dtypes)
    target = torch.float32 if half else torch.float64
    name = str(target).removeprefix("torch.")
    up = Replay("upcast", f"upcast to {name}", {"dtype": name}, dtype=target, local=True,
                 model_fn=lambda: upcast_model(model, target),
                 batch_fn=lambda b: cast_floating(b, target), fallback=lambda: upcast_in_place(model, target))
    if not dtypes or dtypes <= {torch.float64}:
        up.skipped = "already float64"
    out.append(up)

    devices = _autocast_devices()
    auto = Replay("autocast", "autocast off", {"autocast": False}, contexts=(_autocast_off(devices),))
    if not devices:
        auto.skipped = "autocast not active"
    out.append(auto)

    uses_sdpa = any(op.startswith(("aten._scaled_dot_product", "aten.scaled_dot_product")) for op in ops_seen)
    sdpa = Replay("sdpa", "SDPA math backend", {"sdpa_backend": "math"}, contexts=(_sdpa_math,), local=True)
    if not uses_sdpa and not has_attn:
        sdpa.skipped = "no scaled_dot_product_attention call"
    elif not uses_sdpa:
        sdpa.skipped = "attention ran without scaled_dot_product_attention"
    out.append(sdpa)

    grad_on = not (mode is Mode.TRAIN or backward)
    grad = Replay("grad", f"grad {'on' if grad_on else 'off'}", {"grad": grad_on}, grad=grad_on)
    if backward:
        grad.skipped = "backward needs grad"
    elif not has_attn:
        grad.skipped = "no grad-dependent fast path in model"
    out.append(grad)

    if half:
        out.append(Replay("upcast64", "upcast to float64", {"dtype": "float64"}, dtype=torch.float64, local=True,
                           model_fn=lambda: upcast_model(model, torch.float64),
                           batch_fn=lambda b: cast_floating(b, torch.float64),
                           fallback=lambda: upcast_in_place(model, torch.float64)))
    return out
