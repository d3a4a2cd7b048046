"""From the localization run to the contract's ``first_nonfinite`` record (and the facts the rules use)."""

from __future__ import annotations

from torch import nn

from nanprobe.diagnosis.flow import Flow
from nanprobe.diagnosis.instrument import HookedRun, probe_result
from nanprobe.diagnosis.localize import Localizer
from nanprobe.diagnosis.verdict import Facts
from nanprobe.report import INPUT, FirstNonfinite
from nanprobe.sentinel import FiniteCheck

__all__ = ["origin_record"]


def _owner(model: nn.Module, param: str) -> tuple[str, str]:
    owner = param.rsplit(".", 1)[0] if "." in param else ""
    mod = dict(model.named_modules()).get(owner)
    return owner, type(mod).__name__ if mod is not None else ""


def origin_record(model: nn.Module, facts: Facts, *, flow: Flow, loc: Localizer, ctrl: FiniteCheck | None,
                  input_check: FiniteCheck, bad_params: list[str], hooked: HookedRun | None) -> FirstNonfinite:
    """The first_nonfinite record, most basic evidence first: the batch itself, a parameter already
    non-finite, the producing op, else the probe's origin. Updates ``facts`` to match."""
    origin = flow.origin
    kind = facts.kind
    rows = list(ctrl.samples) if ctrl else []
    record: FirstNonfinite
    if flow.leaf == INPUT or (origin is None and input_check.nonfinite):
        facts.leaf = INPUT
        facts.input_rows, facts.input_paths = list(input_check.samples), list(input_check.paths)
        record = FirstNonfinite(INPUT, "input", "forward", input_check.kind or kind,  # type: ignore[arg-type]
                                samples=list(input_check.samples))
    elif flow.leaf is not None and (origin is None or flow.leaf in bad_params):
        facts.leaf = flow.leaf
        owner, owner_type = _owner(model, flow.leaf)
        record = FirstNonfinite(owner, owner_type, "forward", kind, samples=rows)  # type: ignore[arg-type]
    elif origin is not None:
        samples = origin.samples or (list(loc.call_samples.get(origin.call, [])) if origin.call is not None else [])
        record = FirstNonfinite(origin.module, origin.module_type, origin.phase,  # type: ignore[arg-type]
                                origin.kind, samples=samples or rows, op=origin.op,  # type: ignore[arg-type]
                                source=origin.source)
        if origin.node:
            facts.extra_notes.append(f"backward: {origin.node} ({origin.inner_op}) produced "
                                     f"{'NaN' if origin.kind == 'nan' else 'Inf'} from a finite incoming gradient")
    else:
        result = probe_result(hooked) if hooked else None
        found = result.first_nonfinite() if result is not None else None
        record = found or FirstNonfinite("", type(model).__name__, "forward", kind,  # type: ignore[arg-type]
                                         samples=rows)
    record.batch_index = facts.batch_index
    facts.kind = record.kind or kind
    facts.phase = record.phase or "forward"
    facts.module, facts.module_type = record.module or "", record.module_type or ""
    facts.op, facts.source, facts.samples = record.op, record.source, list(record.samples or [])
    return record
