"""What a probe found: status, origin, latent producers and the kept records."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from nanprobe.kinds import Kind
from nanprobe.probe.records import INPUT, CallRecord
from nanprobe.report import FirstNonfinite, LayerRow

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console, ConsoleOptions, RenderResult

__all__ = ["FRAME_COLUMNS", "ProbeResult", "assign_roles"]

FRAME_COLUMNS = [
    "index", "step", "module", "module_type", "phase", "depth", "inputs_finite", "params_finite", "kind",
    "role", "nan", "posinf", "neginf", "min", "max", "absmax", "samples", "outputs",
]


def assign_roles(records: list[CallRecord], origin: CallRecord | None, backward_origin: CallRecord | None,
                 step_kinds: dict[int, Kind]) -> None:
    """Set ``role`` on every record: the origin(s); ``propagated`` for non-finite calls whose kinds reached
    the step's output (later producers of an already flowing kind included); ``latent`` for the rest."""
    for rec in records:
        if rec is origin or rec is backward_origin:
            rec.role = "origin"
            continue
        out = rec.out_kinds
        if not out:
            rec.role = None
        elif rec.phase == "backward":
            rec.role = "propagated"
        else:
            reached = step_kinds.get(rec.step, Kind.FINITE)
            if rec.produced and not rec.produced & reached:
                rec.role = "latent"
            else:
                rec.role = "propagated" if out & reached else "latent"


@dataclasses.dataclass
class ProbeResult:
    """The probe's findings. ``status`` is ``"nonfinite"`` iff a NaN/Inf reached the output of a top-level
    call (or, with ``backward=True``, a gradient). ``records`` are in call order (by ``index``)."""

    status: str
    origin: CallRecord | None = None
    backward_origin: CallRecord | None = None
    input_nonfinite: dict[str, Any] | None = None
    """``{"paths": [...], "kind": ..., "samples": [...], "step": n}`` when a batch carried NaN/Inf."""
    nonfinite_parameters: list[str] = dataclasses.field(default_factory=list)
    latent: list[CallRecord] = dataclasses.field(default_factory=list)
    records: list[CallRecord] = dataclasses.field(default_factory=list)
    calls: int = 0
    """How many forward calls were probed in all (kept or not)."""

    @property
    def nonfinite(self) -> bool:
        return self.status == "nonfinite"

    def first_nonfinite(self) -> FirstNonfinite | None:
        """The report's ``first_nonfinite`` (``op``/``source`` are ``None``: the probe sees modules, not ops)."""
        if self.status != "nonfinite":
            return None
        rec = self.origin or self.backward_origin
        if rec is None:
            rec = next((r for r in self.records if r.role == "propagated"), None)
        if rec is None:
            return None
        return FirstNonfinite(rec.module, rec.module_type, rec.phase, rec.kind or "nan",  # type: ignore[arg-type]
                              samples=sorted(rec.samples))

    def layer_rows(self) -> list[LayerRow]:
        """The kept records as the report's per-layer rows."""
        return [rec.to_layer_row() for rec in self.records]

    def to_dict(self) -> dict[str, Any]:
        first = self.first_nonfinite()
        return {
            "status": self.status,
            "first_nonfinite": first.to_dict() if first is not None else None,
            "origin": self.origin.to_dict() if self.origin else None,
            "backward_origin": self.backward_origin.to_dict() if self.backward_origin else None,
            "input_nonfinite": self.input_nonfinite,
            "nonfinite_parameters": list(self.nonfinite_parameters),
            "latent": [{"module": r.module, "module_type": r.module_type, "kind": r.kind, "index": r.index}
                       for r in self.latent],
            "calls": self.calls,
            "records": [r.to_dict() for r in self.records],
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per kept record (columns: :data:`FRAME_COLUMNS`)."""
        import pandas as pd  # 0.2 s to import: only for the caller who asks for a DataFrame

        rows = []
        for rec in self.records:
            summary = rec.summary()
            rows.append({
                "index": rec.index, "step": rec.step, "module": rec.module, "module_type": rec.module_type,
                "phase": rec.phase, "depth": rec.depth, "inputs_finite": rec.inputs_finite,
                "params_finite": rec.params_finite, "kind": rec.kind, "role": rec.role,
                "nan": summary["nan"], "posinf": summary["posinf"], "neginf": summary["neginf"],
                "min": summary["min"], "max": summary["max"], "absmax": summary["absmax"],
                "samples": list(rec.samples), "outputs": len(rec.outputs),
            })
        return pd.DataFrame(rows, columns=FRAME_COLUMNS)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from nanprobe.probe.render import render_result

        yield from render_result(self)


def is_input(rec: CallRecord | None) -> bool:
    return rec is not None and rec.module == INPUT
