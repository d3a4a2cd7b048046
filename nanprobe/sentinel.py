"""The sentinel: cheap finiteness checks of outputs, losses and gradients (no per-module hooks), and the
uninstrumented control run of one batch that every diagnosis starts from."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from nanprobe.batches import batch_size as _batch_size
from nanprobe.batches import call_model
from nanprobe.restore import preserved_model
from nanprobe.rng import RNGState
from nanprobe.walk import iter_tensors

__all__ = ["FiniteCheck", "RunResult", "check_finite", "check_gradients", "mode_context", "run_batch",
           "tensor_leaves"]

Mode = Literal["eval", "train"]


@dataclass(frozen=True)
class FiniteCheck:
    """Whether any NaN/Inf is in a structure; if so which leaves (paths) and which batch rows carry it."""

    nonfinite: bool
    kind: str | None = None  # "nan" when any NaN, else "inf"
    paths: tuple[str, ...] = ()
    samples: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"nonfinite": self.nonfinite, "kind": self.kind, "paths": list(self.paths),
                "samples": list(self.samples)}


CLEAN = FiniteCheck(nonfinite=False)


def tensor_leaves(obj: Any, prefix: str = "out") -> list[tuple[str, torch.Tensor]]:
    """(path, tensor) for every floating or complex tensor in a nested structure (paths as in ``walk``)."""
    return [(path, t) for path, t in iter_tensors(obj, prefix) if t.is_floating_point() or t.is_complex()]


def check_finite(obj: Any, *, batch_size: int | None = None, prefix: str = "out") -> FiniteCheck:
    """One host sync when everything is finite; details (paths, kind, rows) are computed only otherwise."""
    leaves = tensor_leaves(obj, prefix)
    if not leaves:
        return CLEAN
    flags = [torch.isfinite(t).all() for _, t in leaves if t.numel()]
    if not flags or bool(torch.stack([f.to("cpu", non_blocking=True) for f in flags]).all()):
        return CLEAN
    return _describe(leaves, batch_size)


def _describe(leaves: list[tuple[str, torch.Tensor]], batch_size: int | None) -> FiniteCheck:
    paths: list[str] = []
    rows: set[int] = set()
    any_nan = False
    for path, t in leaves:
        bad = ~torch.isfinite(t)
        if not bool(bad.any()):
            continue
        paths.append(path)
        any_nan = any_nan or bool(torch.isnan(t).any())
        if t.dim() > 0 and (batch_size is None or t.shape[0] == batch_size):
            rows.update(int(i) for i in bad.reshape(t.shape[0], -1).any(dim=1).nonzero().flatten().tolist())
    return FiniteCheck(nonfinite=True, kind="nan" if any_nan else "inf", paths=tuple(paths),
                       samples=tuple(sorted(rows)))


def check_gradients(model: nn.Module) -> FiniteCheck:
    """Finiteness of every parameter's ``.grad``; ``paths`` are parameter names."""
    named = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if not named:
        return CLEAN
    flags = torch.stack([torch.isfinite(g).all().cpu() for _, g in named])
    if bool(flags.all()):
        return CLEAN
    bad = [(name, g) for (name, g), ok in zip(named, flags.tolist()) if not ok]
    any_nan = any(bool(torch.isnan(g).any()) for _, g in bad)
    return FiniteCheck(nonfinite=True, kind="nan" if any_nan else "inf", paths=tuple(n for n, _ in bad))


@contextlib.contextmanager
def mode_context(model: nn.Module, mode: str, *, backward: bool = False) -> Iterator[None]:
    """``eval``: ``model.eval()`` under ``torch.no_grad()`` (grad on with ``backward``); ``train``:
    ``model.train()`` with grad on. The caller restores the flags (see :func:`preserved_model`)."""
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', not {mode!r}")
    model.train(mode == "train")
    with torch.set_grad_enabled(mode == "train" or backward):
        yield


def backward_target(output: Any) -> torch.Tensor | None:
    """The output itself when it is a scalar, else the sum of its floating outputs (the contract's rule)."""
    if isinstance(output, torch.Tensor) and output.numel() == 1 and output.is_floating_point():
        return output.reshape(())
    parts = [t.float().sum() for _, t in tensor_leaves(output) if t.requires_grad and t.is_floating_point()]
    if not parts:
        return None
    return torch.stack(parts).sum()


@dataclass
class RunResult:
    """What one uninstrumented execution of a batch showed."""

    output: FiniteCheck
    gradients: FiniteCheck | None = None
    error: BaseException | None = None
    value: Any = field(default=None, repr=False)  # the model's output, when asked for

    @property
    def nonfinite(self) -> bool:
        return self.output.nonfinite or bool(self.gradients and self.gradients.nonfinite)


def run_batch(
    model: nn.Module,
    batch: Any,
    *,
    mode: str = "eval",
    backward: bool = False,
    rng: RNGState | None = None,
    keep_output: bool = False,
) -> RunResult:
    """Run ``batch`` once with no hooks, from ``rng`` when given, and check output (and gradients).

    The model's flags, buffers and ``.grad`` are restored afterwards; the caller's RNG is not touched
    when ``rng`` is given (it is forked)."""
    size = _batch_size(batch)
    saved = RNGState.capture(host=True) if rng is not None else None
    try:
        if rng is not None:
            rng.restore()
        with preserved_model(model), mode_context(model, mode, backward=backward):
            output = call_model(model, batch)
            out_check = check_finite(output, batch_size=size)
            grads: FiniteCheck | None = None
            if backward:
                target = backward_target(output)
                grads = CLEAN
                if target is not None:
                    target.backward()
                    grads = check_gradients(model)
            return RunResult(output=out_check, gradients=grads, value=output if keep_output else None)
    finally:
        if saved is not None:
            saved.restore()
