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

__all__ = ["CLEAN", "FiniteCheck", "check_finite", "check_gradients", "check_parameters", "tensor_leaves"]


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


def _extremes(t: torch.Tensor) -> torch.Tensor:
    """(min, max) of a tensor in float32, one pass and no temporary: NaN propagates into both, an infinity
    into its side, so they say whether every value is finite and, if not, which kinds are there."""
    x = t.detach()
    x = x.abs() if x.is_complex() else x
    lo, hi = torch.aminmax(x.reshape(-1))
    return torch.stack([lo, hi]).float()


def check_finite(obj: Any, *, batch_size: int | None = None, prefix: str = "out") -> FiniteCheck:
    """One pass per tensor and one host sync when everything is finite; which leaves and rows carry NaN/Inf
    only otherwise."""
    leaves = [(p, t) for p, t in tensor_leaves(obj, prefix) if t.numel()]
    if not leaves:
        return CLEAN
    device = leaves[0][1].device
    values = torch.stack([_extremes(t).to(device) for _, t in leaves]).tolist()
    if all(lo - lo == 0 and hi - hi == 0 for lo, hi in values):
        return CLEAN
    return _describe(leaves, values, batch_size)


def _describe(leaves: list[tuple[str, torch.Tensor]], extremes: list[list[float]], batch_size: int | None
              ) -> FiniteCheck:
    paths: list[str] = []
    rows: set[int] = set()
    any_nan = False
    for (path, t), (lo, hi) in zip(leaves, extremes):
        if lo - lo == 0 and hi - hi == 0:
            continue
        paths.append(path)
        any_nan = any_nan or lo != lo or hi != hi
        if t.dim() > 0 and (batch_size is None or t.shape[0] == batch_size):
            rows.update(_bad_rows(t.detach()))
    return FiniteCheck(nonfinite=True, kind="nan" if any_nan else "inf", paths=tuple(paths),
                       samples=tuple(sorted(rows)))


def _bad_rows(t: torch.Tensor) -> list[int]:
    """Rows (dim 0) holding NaN/Inf: per-row sums (one pass) flag them, and only flagged rows are checked
    exactly (a finite row whose sum overflows is not one of them)."""
    x = t.abs() if t.is_complex() else t
    flat = x.reshape(x.shape[0], -1)
    sums = flat.sum(dim=1, dtype=torch.float32) if flat.is_floating_point() else flat.sum(dim=1)
    flagged = (~torch.isfinite(sums)).nonzero().flatten().tolist()
    return [int(i) for i in flagged if not bool(torch.isfinite(flat[i]).all())]


def check_parameters(model: nn.Module) -> FiniteCheck:
    """Finiteness of every parameter; ``paths`` are parameter names."""
    return _check_named([(name, p) for name, p in model.named_parameters()])


def check_gradients(model: nn.Module) -> FiniteCheck:
    """Finiteness of every parameter's ``.grad``; ``paths`` are parameter names."""
    return _check_named([(name, p.grad) for name, p in model.named_parameters() if p.grad is not None])


def _check_named(named: list[tuple[str, torch.Tensor]]) -> FiniteCheck:
    bad = nonfinite_tensors(named)
    if not bad:
        return CLEAN
    tensors = dict(named)
    any_nan = any(bool(torch.isnan(tensors[n]).any()) for n in bad)
    return FiniteCheck(nonfinite=True, kind="nan" if any_nan else "inf", paths=tuple(bad))
