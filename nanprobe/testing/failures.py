"""What the guard reports: its settings (the marker's options), one failure with its message, and how a
failure's origin is found (by the diagnose engine, without replays)."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from nanprobe.diagnosis import diagnose
from nanprobe.report import FirstNonfinite, Report, display_name

__all__ = ["GuardFailure", "GuardSettings", "describe_origin", "find_origin"]


# -- localization and messages ----------------------------------------------------------------------
def find_origin(
    model: nn.Module, batch: Any, *, mode: str, backward: bool, rng: Any = None
) -> tuple[FirstNonfinite | None, Report | None, str]:
    """Re-execute one call under the diagnose engine (control + localization, no replay).

    Returns ``(first_nonfinite, diagnosis, note)``; the note says why there is no origin when there is none."""
    try:
        diagnosis = diagnose(model, [batch], mode=mode, backward=backward, rng_states=[rng], replay=False)
    except Exception as exc:  # the guard's own failure must never hide the NaN it found
        return None, None, f"not localized: the diagnosis raised {type(exc).__name__}: {exc}"
    first = diagnosis.first_nonfinite
    if first is None:
        return None, diagnosis, (f"not localized: re-executing the call in {mode} mode"
                                 f"{' with backward' if backward else ''} came out finite")
    return first, diagnosis, ""


def describe_origin(first: Mapping[str, Any]) -> str:
    """``module 'enc.0' (Linear), phase forward, kind nan, samples [2], op aten.addmm, source m.py:3``."""
    text = (f"module '{display_name(first.get('module'))}' ({first.get('module_type')}), phase {first.get('phase')}, "
            f"kind {first.get('kind')}, samples {list(first.get('samples') or [])}")
    if first.get("op"):
        text += f", op {first['op']}"
    if first.get("source"):
        text += f", source {first['source']}"
    return text


def _verdict_line(diagnosis: Any) -> str:
    verdict = getattr(diagnosis, "verdict", None)
    if not verdict:
        return ""
    line = f"cause: {verdict.get('cause')}"
    if verdict.get("summary"):
        line += f": {verdict['summary']}"
    if verdict.get("fix"):
        line += f" (fix: {verdict['fix']})"
    return line


# -- settings and failures --------------------------------------------------------------------------
@dataclass(frozen=True)
class GuardSettings:
    """What the guard tolerates. The ``@pytest.mark.nanprobe(...)`` marker takes these names as keywords."""

    enabled: bool = True
    allow_inf: bool = False  # Inf (but not NaN) may reach outputs and gradients
    allow_modules: tuple[str, ...] = ()  # fnmatch patterns: origin module names/types, or watched model names
    backward: bool = True  # check gradients after each backward through a watched model
    parameters: bool = True  # at the end of the test, watched models' parameters must be finite
    diagnose: bool = True  # localize a failure by re-executing the call (off: message without origin)

    @classmethod
    def from_options(cls, base: GuardSettings | None = None, **options: Any) -> GuardSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown nanprobe option(s) {unknown}; known: {sorted(known)}")
        if "allow_modules" in options:
            value = options["allow_modules"]
            options["allow_modules"] = (value,) if isinstance(value, str) else tuple(value or ())
        return replace(base or cls(), **options)

    def allows(self, *names: str | None) -> bool:
        return any(n and fnmatch.fnmatchcase(n, p) for p in self.allow_modules for n in names)


@dataclass
class GuardFailure:
    """One non-finite value the guard caught, with its localization."""

    model: str  # the watched name ("" for an explicit check)
    phase: str  # "forward" | "backward" | "check" | "parameters"
    kind: str
    samples: tuple[int, ...] = ()
    paths: tuple[str, ...] = ()  # output leaves, or parameter names
    call_index: int | None = None
    mode: str | None = None
    first_nonfinite: FirstNonfinite | None = None
    note: str = ""
    diagnosis: Report | None = field(default=None, repr=False)
    # what a post-mortem bundle needs: the model, and the failing call's batch and RNG state before it
    module: nn.Module | None = field(default=None, repr=False)
    batch: Any = field(default=None, repr=False)
    rng: Any = field(default=None, repr=False)

    @property
    def message(self) -> str:
        where = _KIND_WORD.get(self.kind, self.kind)
        if self.phase == "forward":
            head = (f"{where} reached the output of watched model '{self.model}' (call #{self.call_index}, "
                    f"{self.mode} mode) in samples {list(self.samples)} at {', '.join(self.paths)}")
        elif self.phase == "backward":
            head = (f"{where} in the gradients of watched model '{self.model}' after backward "
                    f"(last call #{self.call_index}, {self.mode} mode): {_short(self.paths)}")
        elif self.phase == "parameters":
            head = f"{where} in the parameters of watched model '{self.model}': {_short(self.paths)}"
        else:
            head = f"{where} in '{self.model}' at {', '.join(self.paths)}, samples {list(self.samples)}"
        lines = [f"nanprobe: {head}"]
        if self.first_nonfinite:
            lines.append(f"  origin: {describe_origin(self.first_nonfinite)}")
        verdict = _verdict_line(self.diagnosis)
        if verdict:
            lines.append(f"  {verdict}")
        if self.note:
            lines.append(f"  {self.note}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "phase": self.phase, "kind": self.kind, "samples": list(self.samples),
                "paths": list(self.paths), "call_index": self.call_index, "mode": self.mode,
                "first_nonfinite": self.first_nonfinite.to_dict() if self.first_nonfinite is not None else None,
                "note": self.note, "diagnosis": self.diagnosis.to_dict() if self.diagnosis is not None else None}


_KIND_WORD = {"nan": "NaN", "inf": "Inf"}


def _short(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
