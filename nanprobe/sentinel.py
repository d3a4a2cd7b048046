"""The sentinel: cheap finiteness checks of outputs, losses and gradients (no per-module hooks): one host read
when everything is finite; which leaves and batch rows carry NaN/Inf only otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nanprobe.kinds import nonfinite_tensors
from nanprobe.report import Detection
from nanprobe.walk import iter_tensors

__all__ = ["CLEAN", "FiniteCheck", "check_finite", "check_gradients", "tensor_leaves"]


@dataclass(frozen=True)
class FiniteCheck:
    """Whether any NaN/Inf is in a structure; if so which leaves (paths) and which batch rows carry it."""

    nonfinite: bool
    kind: str | None = None  # "nan" when any NaN, else "inf"
    paths: tuple[str, ...] = ()
    samples: tuple[int, ...] = ()

    def to_detection(self) -> Detection:
        """As the report records it."""
        return Detection(nonfinite=self.nonfinite, kind=self.kind,  # type: ignore[arg-type]
                         paths=list(self.paths), samples=list(self.samples))

    def to_dict(self) -> dict[str, Any]:
        return self.to_detection().to_dict()


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
    bad = nonfinite_tensors(named)  # type: ignore[arg-type]
    if not bad:
        return CLEAN
    grads = dict(named)
    any_nan = any(bool(torch.isnan(grads[n]).any()) for n in bad)  # type: ignore[arg-type]
    return FiniteCheck(nonfinite=True, kind="nan" if any_nan else "inf", paths=tuple(bad))
