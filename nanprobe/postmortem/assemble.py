"""Assemble a post-mortem bundle from a snapshot of the failing step.

The monitor and the pytest guard only decide what happened; they hand a :class:`Snapshot` (the model, the
failing call's batch and RNG, what was detected where, the diagnosis if one was made, the history) to
:func:`write_snapshot`, which builds the :class:`~nanprobe.report.BundleReport` and writes the bundle
atomically (:func:`nanprobe.postmortem.bundle.write_bundle`). When nanprobe itself fails while handling a
failure, :func:`write_incomplete` still leaves a bundle that says why it is incomplete.
"""

from __future__ import annotations

import copy
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanprobe.batches import ModelCall, map_tensors
from nanprobe.execution import Mode
from nanprobe.postmortem.bundle import BundleContent, write_bundle
from nanprobe.postmortem.env import collect_env
from nanprobe.report import (
    LOSS,
    BundleInfo,
    BundleReport,
    CallInfo,
    FirstNonfinite,
    Incident,
    LayerRow,
    PytestInfo,
    Report,
    Verdict,
    WarningInfo,
)
from nanprobe.rng import RNGState
from nanprobe.sentinel import FiniteCheck

__all__ = ["ModelSource", "Snapshot", "build_report", "write_incomplete", "write_snapshot"]

_SYNTHETIC_MODULE = {"forward": "<output>", "loss": LOSS, "backward": "<gradients>"}


@dataclass
class ModelSource:
    """How a bundle keeps the model: ``"state"`` (the state dict, plus ``factory``/``config`` so it can be
    rebuilt; without a factory the whole module is pickled), ``"reference"`` (the path of ``checkpoint``)
    or ``"none"``. ``strip`` names instance attributes to drop before pickling (the monitor's wrappers)."""

    how: str = "state"
    factory: str | None = None
    config: dict[str, Any] | None = None
    run_config: dict[str, Any] | None = None
    checkpoint: str | None = None
    strip: tuple[str, ...] = ()


@dataclass
class Snapshot:
    """Everything a bundle is made of, as the monitor or the pytest guard saw the failing step."""

    name: str
    model: nn.Module | None
    batch: Any = None
    rng: RNGState | None = None
    phase: str | None = None  # "forward" | "loss" | "backward" | "check" | "parameters"
    check: FiniteCheck | None = None
    diagnosis: Report | None = None
    diagnosis_error: str | None = None
    mode: Mode | None = None
    grad_enabled: bool | None = None
    method: str | None = None
    run: str | None = None
    step: int | None = None
    epoch: int | None = None
    rank: int = 0
    world_size: int = 1
    ranks_nonfinite: list[int] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    layers: list[LayerRow] = field(default_factory=list)
    policy: str | None = None
    depth: str | None = None
    source: ModelSource = field(default_factory=ModelSource)
    pytest: PytestInfo | None = None
    first_nonfinite: FirstNonfinite | None = None  # what the caller saw, when no diagnosis reproduced it
    verdict: Verdict | None = None  # when the diagnosis did not reproduce it but something else explains it
    warning: WarningInfo | None = None  # an early-warning bundle: nothing is non-finite yet
    incomplete: str | None = None
    dtype: str | None = None  # what the model computed in (its outputs' dtype)
    earlier_warnings: list[WarningInfo] = field(default_factory=list)  # a failure's early warnings before it
    autocast: tuple[str, ...] = ()  # the call's autocast regions, "device:dtype"

    @property
    def backward(self) -> bool:
        return self.phase in ("loss", "backward")


def _synthetic_first(s: Snapshot) -> FirstNonfinite:
    """Where the failure was seen, when no diagnosis reproduced it (the monitor's own check)."""
    if s.first_nonfinite is not None:
        return s.first_nonfinite
    check = s.check
    model_type = type(s.model).__name__ if s.model is not None else ""
    phase = s.phase or "forward"
    module, module_type = _SYNTHETIC_MODULE.get(phase, "<output>"), model_type
    if phase in ("backward", "parameters") and check is not None and check.paths:
        module = check.paths[0].rpartition(".")[0]
        found = dict(s.model.named_modules()).get(module) if s.model is not None else None
        module_type = type(found).__name__ if found is not None else model_type
    elif phase == "loss":
        module_type = "loss"
    return FirstNonfinite(module, module_type, "backward" if phase == "backward" else "forward",
                          (check.kind if check else None) or "nan",  # type: ignore[arg-type]
                          samples=list(check.samples) if check else [])


def build_report(s: Snapshot) -> BundleReport:
    """The bundle's report: the diagnosis (when it reproduced the failure) plus the step it came from."""
    base = s.diagnosis.to_dict() if s.diagnosis is not None else {}
    report = BundleReport.from_dict(base)
    reproduced = report.status == "nonfinite"
    if not reproduced and s.warning is None:
        report.status = "nonfinite"
        report.first_nonfinite = _synthetic_first(s)
        report.verdict = report.verdict or s.verdict
    report.warning = s.warning
    report.earlier_warnings = list(s.earlier_warnings) or None
    if not report.layers and s.layers:
        report.layers = list(s.layers)
    report.run, report.step, report.epoch = s.run, s.step, s.epoch
    report.rank, report.world_size, report.ranks_nonfinite = s.rank, s.world_size, list(s.ranks_nonfinite)
    report.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    report.history = list(s.history)
    mode = s.mode.value if s.mode is not None else None
    report.monitor = Incident(
        phase=s.phase, detected=s.check.to_detection() if s.check is not None else None, reproduced=reproduced,
        diagnosis_error=s.diagnosis_error, policy=s.policy, depth=s.depth,
        call=CallInfo(mode=mode, training=(s.mode is Mode.TRAIN) if s.mode is not None else None,  # type: ignore[arg-type]
                      grad_enabled=s.grad_enabled, method=s.method, backward=s.backward, dtype=s.dtype,
                      autocast=list(s.autocast) or None),
        incomplete=s.incomplete)
    report.pytest = s.pytest
    return report


def _plain_batch(batch: Any) -> tuple[Any, str]:
    plain = map_tensors(batch, lambda t: t.detach().cpu())
    if isinstance(plain, ModelCall):
        return {"args": list(plain.args), "kwargs": dict(plain.kwargs)}, "call"
    if isinstance(plain, dict):
        return plain, "dict"
    return (list(plain) if isinstance(plain, tuple) else plain), "args"


def _model_part(s: Snapshot) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """(what model.pt holds, the report's description of it, the state-dict fallback when pickling fails)."""
    src = s.source
    if s.model is None or src.how == "none":
        return None, {"kind": "none"}, None
    if src.how == "reference":
        return None, {"kind": "reference", "checkpoint": str(Path(str(src.checkpoint)).resolve())}, None
    meta: dict[str, Any] = {"format": 1, "mode": s.mode.value if s.mode is not None else "eval",
                            "run_config": src.run_config or {}}
    state = {k: v.detach().cpu() for k, v in s.model.state_dict().items()}
    if src.factory:
        meta["factory"] = src.factory
        obj = {"model_state_dict": state, "config": src.config or {}, "nanprobe": meta}
        return obj, {"kind": "state", "file": "model.pt", "factory": src.factory, "trust_pickle": False}, None
    module = s.model
    if any(m in module.__dict__ for m in src.strip):  # wrappers on the instance do not pickle
        module = copy.copy(module)
        for m in src.strip:
            module.__dict__.pop(m, None)
    fallback = {"model_state_dict": state, "config": src.config or {}, "nanprobe": meta}
    return module, {"kind": "pickle", "file": "model.pt", "trust_pickle": True}, fallback


def write_snapshot(s: Snapshot, out_dir: str | Path) -> Path:
    """Write the bundle ``out_dir/<name>`` (atomically) and return its path; errors propagate."""
    report = build_report(s)
    model_obj, model_info, fallback = _model_part(s)
    batch, batch_kind = _plain_batch(s.batch) if s.batch is not None else (None, "none")
    device = next((p.device for p in s.model.parameters()), torch.device("cpu")) if s.model is not None else "cpu"
    report.bundle = BundleInfo(model=model_info, batch_kind=batch_kind, device=str(device))
    content = BundleContent(report=report, batch=batch, rng=s.rng.to_dict() if s.rng is not None else None,
                            layers=list(report.layers), env=collect_env(s.model), model=model_obj,
                            model_fallback=fallback)
    return write_bundle(out_dir, s.name, content)


def write_incomplete(s: Snapshot, out_dir: str | Path, reason: str) -> Path:
    """A bundle that says it is incomplete and why: the report alone (no model, no batch), for when nanprobe
    failed while handling the failure. Errors propagate."""
    s.incomplete = reason
    report = build_report(s)
    report.bundle = BundleInfo(model={"kind": "none"}, batch_kind="none", device="cpu")
    content = BundleContent(report=report, batch=None, rng=None, layers=list(report.layers), env={},
                            model=None, model_fallback=None, only=("report.json",))
    return write_bundle(out_dir, s.name, content)
