"""One recorded module call, and the small helpers that read kinds and sample rows off tensors."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from nanprobe.kinds import FINITE, Kind, tensor_kinds
from nanprobe.report import INPUT, ROOT_LABEL, LayerRow, display_name, to_plain
from nanprobe.stats import TensorStats, tensor_stats

__all__ = ["INPUT", "ROOT_LABEL", "CallRecord", "batch_dim", "is_additive_mask", "nonfinite_rows"]


@dataclasses.dataclass
class CallRecord:
    """One forward call of one module (or one backward step of it).

    ``index`` counts calls in the order they started (pre-order; the root is the first call of a step).
    ``module`` is the qualified name from ``named_modules()``: ``""`` for the root module (rendered as
    ``<root>``), ``"<input>"`` for the synthetic record standing for the batch.
    For ``phase == "backward"`` the ``outputs`` are the gradients the module produced (``grad_in[i]``,
    ``grad.<param>``) and ``inputs_finite`` says whether the gradient it received was finite.
    """

    index: int
    module: str
    module_type: str
    phase: str = "forward"
    inputs_finite: bool = True
    params_finite: bool = True
    outputs: dict[str, TensorStats] = dataclasses.field(default_factory=dict)
    kind: str | None = None
    role: str | None = None
    samples: list[int] = dataclasses.field(default_factory=list)
    nonfinite_params: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    step: int = 0
    """Which top-level call (forward step) this call belongs to."""
    depth: int = 0
    parent: int | None = None
    """``index`` of the enclosing probed call, ``None`` for a top-level call."""
    in_kinds: Kind = FINITE
    """Kinds of non-finite values in the inputs (kwargs included), without their sign (:meth:`Kind.coarse`)."""
    produced: Kind = FINITE
    """Kinds this call introduced itself: in its output, not in its inputs, not from a call nested in it."""
    order: int = 0
    """Completion order (post-order): children complete before the call that contains them."""

    @property
    def out_kinds(self) -> Kind:
        """Kinds of non-finite values in the outputs, without their sign."""
        found = FINITE
        for s in self.outputs.values():
            found |= s.kinds
        return Kind(found).coarse()

    @property
    def nonfinite(self) -> bool:
        return any(s.nonfinite for s in self.outputs.values())

    @property
    def label(self) -> str:
        return display_name(self.module)

    def summary(self) -> dict[str, Any]:
        """Output statistics folded over all outputs: min/max/absmax of the floating ones, counts summed."""
        floats = [s for s in self.outputs.values() if s.min is not None]
        return {
            "min": min((s.min for s in floats), default=None),  # type: ignore[type-var]
            "max": max((s.max for s in floats), default=None),  # type: ignore[type-var]
            "absmax": max((s.absmax for s in floats), default=None),  # type: ignore[type-var]
            "nan": sum(s.nan for s in self.outputs.values()),
            "posinf": sum(s.posinf for s in self.outputs.values()),
            "neginf": sum(s.neginf for s in self.outputs.values()),
        }

    def to_layer_row(self) -> LayerRow:
        """The report's row for this call: its outputs' folded range and counts, and its role."""
        summary = self.summary()
        floats = [s for s in self.outputs.values() if s.mean is not None]
        return LayerRow(index=self.index, module=self.module, module_type=self.module_type,
                        phase=self.phase,  # type: ignore[arg-type]
                        min=summary["min"], max=summary["max"], absmax=summary["absmax"],
                        mean=sum(s.mean for s in floats) / len(floats) if floats else None,  # type: ignore[misc]
                        std=max((s.std for s in floats if s.std is not None), default=None),
                        nan=summary["nan"], inf=summary["posinf"] + summary["neginf"],
                        role=self.role)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "step": self.step,
            "module": self.module,
            "module_type": self.module_type,
            "phase": self.phase,
            "inputs_finite": self.inputs_finite,
            "params_finite": self.params_finite,
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
            "kind": self.kind,
            "role": self.role,
            "samples": list(self.samples),
            "nonfinite_params": list(self.nonfinite_params),
            "extra": to_plain(self.extra),
        }


def is_additive_mask(x: torch.Tensor) -> bool:
    """A float attention mask: -inf where masked, 0 elsewhere. Its -inf are intentional, so a probe does not
    count them as non-finite inputs (only called on tensors already known to hold Inf: the rare path)."""
    if not x.dtype.is_floating_point:
        return False
    s = tensor_stats(x)
    return s.nan == 0 and s.posinf == 0 and s.neginf > 0 and (s.min is None or s.min == s.max == 0.0)


def nonfinite_rows(x: torch.Tensor, batch: int | None) -> list[int]:
    """Rows of the batch that carry a non-finite value of ``x`` (see :func:`batch_dim`)."""
    if x.is_nested:  # one component per sample
        return [i for i, c in enumerate(x.detach().unbind()) if tensor_kinds(c) != FINITE]
    dim = batch_dim(x, batch)
    if dim is None or batch is None:
        return []
    bad = ~torch.isfinite(x.detach().abs() if x.is_complex() else x.detach())
    per_row = bad.movedim(dim, 0).reshape(batch, -1).any(dim=1)
    return [int(i) for i in per_row.nonzero().flatten().tolist()]


def batch_dim(x: torch.Tensor, batch: int | None) -> int | None:
    """The batch dimension of ``x``: dim 0 if its size is the batch size, else the first dim of that size
    (e.g. dim 1 of a ``(L, B, E)`` tensor of a ``batch_first=False`` attention), else ``None``."""
    if batch is None or x.is_nested:
        return None
    for d, size in enumerate(x.shape):
        if size == batch:
            return d
    return None
