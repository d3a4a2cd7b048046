"""What the monitor does at a non-finite step: diagnose the batch (the watcher paused, within a time budget
in ``dump``/``warn`` mode), hand a snapshot to ``nanprobe.postmortem`` and describe the step in one line.

A failure inside nanprobe never becomes the user's failure: in ``dump`` and ``warn`` mode an exception in the
diagnosis or in writing the bundle (disk full, read-only folder, out of memory) leaves a bundle that says it
is incomplete and why, or, when even that cannot be written, a message that says so; a ``KeyboardInterrupt``
during the diagnosis is re-raised after the bundle is written. In ``raise`` mode the same problems end in
nanprobe's :class:`~nanprobe.errors.NonFiniteError`, with the original exception chained.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from nanprobe.diagnosis import diagnose
from nanprobe.diagnosis.from_history import history_verdict, parameters_verdict
from nanprobe.monitoring.methods import method_adapter
from nanprobe.monitoring.step import Depth, Detected, Policy, StepCall
from nanprobe.monitoring.warning import EarlyWarning
from nanprobe.postmortem.assemble import ModelSource, Snapshot, build_report, write_incomplete, write_snapshot
from nanprobe.report import LayerRow, Report, WarningInfo, display_name

__all__ = ["EAGER_NOTE", "KEPT_WARNINGS", "Failure", "Handling", "Position", "handle_failure", "handle_warning",
           "warning_info"]

KEPT_WARNINGS = 8
EAGER_NOTE = "the model ran under torch.compile; the diagnosis re-ran it eagerly, as nanprobe replay does"


@dataclass
class Handling:
    """How the monitor handles a non-finite step (its settings that matter here, and nothing else)."""

    out_dir: Path
    policy: Policy
    depth: Depth
    diagnose: bool
    time_budget: float | None  # seconds the diagnosis may hold the step up (None: no limit)
    source: ModelSource
    run_name: str
    max_bundles: int


@dataclass
class Position:
    """Where in the run the failure was seen."""

    step: int
    epoch: int | None
    rank: int
    world_size: int
    ranks: list[int]


@dataclass
class Failure:
    """One non-finite step as this rank saw it."""

    step: int
    epoch: int | None
    rank: int
    ranks_nonfinite: list[int]
    phase: str | None  # None: another rank saw it, this one did not
    message: str
    bundle: Path | None = None
    report: Any = field(default=None, repr=False)  # the BundleReport
    diagnosis: Report | None = field(default=None, repr=False)
    internal_error: BaseException | None = field(default=None, repr=False)
    """An exception nanprobe itself raised while handling the failure (the bundle then says so)."""

    @property
    def local(self) -> bool:
        return self.phase is not None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "rank": self.rank, "ranks_nonfinite": self.ranks_nonfinite,
                "phase": self.phase, "message": self.message,
                "bundle": str(self.bundle) if self.bundle is not None else None}


def _bundle_name(h: Handling, where: Position) -> str:
    name = f"{h.run_name}-step{where.step}"
    return f"{name}-rank{where.rank}" if where.world_size > 1 else name


def _message(h: Handling, where: Position, *, phase: str | None, report: Any, bundle: Path | None,
             note: str | None = None) -> str:
    at = f"step {where.step}" + (f", rank {where.rank} of {where.world_size}" if where.world_size > 1 else "")
    if phase is None:
        return (f"non-finite values on rank(s) {where.ranks} at {at}; this rank stopped with them "
                f"(bundles are written by those ranks under {h.out_dir})")
    first = report.first_nonfinite if report is not None else None
    verdict = report.verdict if report is not None else None
    text = f"non-finite {first.kind if first else ''} at {at} ({phase})".replace("  ", " ")
    if first is not None and first.module is not None:
        text += f": first produced by {display_name(first.module)} ({first.module_type})"
    if verdict is not None:
        text += f", cause {verdict.cause}"
    if bundle is not None:
        text += f"; bundle {bundle} (nanprobe replay {bundle})"
    if note:
        text += f"; {note}"
    return text


def _diagnose(h: Handling, target: nn.Module, detected: Detected, run_config: dict[str, Any] | None,
              histories: dict[str, Any], optimizer: Any | None) -> tuple[Report | None, str | None]:
    """(diagnosis, why there is none) for the failing batch, re-run from its captured RNG."""
    call = detected.call
    if not h.diagnose:
        return None, "diagnosis turned off (diagnose=False)"
    if call is None:
        return None, "no model call was seen before this check: nothing to diagnose"
    budget = h.time_budget if h.policy is not Policy.RAISE else None
    diagnosis = diagnose(method_adapter(target, call.method), [call.call.simplest()], mode=call.mode,
                         backward=detected.phase in ("loss", "backward"), config=run_config,
                         rng_states=[call.rng], time_budget=budget, optimizer=optimizer, **histories)
    return diagnosis, None


def handle_failure(h: Handling, *, target: nn.Module, where: Position, detected: Detected | None,
                   history: list[dict[str, Any]], layers: list[LayerRow], bundles_written: int,
                   paused: Callable[[], AbstractContextManager[Any]],
                   layer_history: list[dict[str, Any]] | None = None,
                   param_history: list[dict[str, Any]] | None = None, compiled: bool = False,
                   dtype: str | None = None, autocast: tuple[str, ...] = (), optimizer: Any | None = None,
                   warnings: Sequence[EarlyWarning] = ()) -> Failure:
    """Diagnose (when asked), write the bundle (when under ``max_bundles``) and describe it in one line.
    Raises only ``KeyboardInterrupt`` (after the bundle is written); nanprobe's own errors are returned in
    ``Failure.internal_error``. ``compiled``: the model ran under torch.compile (the report says the diagnosis
    ran eagerly); ``dtype``/``autocast``: what the model computed in, and the call's autocast regions;
    ``optimizer``: the run's optimizer (the verdict reads its state for a non-finite parameter); ``warnings``:
    the early warnings given before (the bundle keeps the first :data:`KEPT_WARNINGS`)."""
    if detected is None:
        return Failure(where.step, where.epoch, where.rank, list(where.ranks), None,
                       _message(h, where, phase=None, report=None, bundle=None))
    call = detected.call
    snap = Snapshot(name=_bundle_name(h, where), model=target, batch=call.call.simplest() if call else None,
                    rng=call.rng if call else None, phase=detected.phase, check=detected.check,
                    mode=call.mode if call else None, grad_enabled=call.grad_enabled if call else None,
                    method=call.method if call else None, run=h.run_name, step=where.step, epoch=where.epoch,
                    rank=where.rank, world_size=where.world_size, ranks_nonfinite=list(where.ranks),
                    history=history, layers=layers, policy=h.policy.value, depth=h.depth.value, source=h.source,
                    dtype=dtype, autocast=autocast,
                    earlier_warnings=[warning_info(w) for w in warnings[:KEPT_WARNINGS]])
    if bundles_written >= h.max_bundles:
        note = f"no bundle (max_bundles={h.max_bundles} already written)"
        return Failure(where.step, where.epoch, where.rank, list(where.ranks), detected.phase,
                       _message(h, where, phase=detected.phase, report=build_report(snap), bundle=None, note=note))
    internal: BaseException | None = None
    interrupt: KeyboardInterrupt | None = None
    histories = {"history": history, "layer_history": layer_history or (), "param_history": param_history or ()}
    try:
        with paused():
            snap.diagnosis, snap.diagnosis_error = _diagnose(h, target, detected, h.source.run_config, histories,
                                                             optimizer)
            if snap.diagnosis is None or not snap.diagnosis.nonfinite:
                snap.verdict = _history_verdict(detected, histories, dtype, target, optimizer)
            if compiled and snap.diagnosis is not None:
                snap.diagnosis.instrumentation = {**(snap.diagnosis.instrumentation or {}), "compiled": EAGER_NOTE}
    except KeyboardInterrupt as e:  # written up below, then re-raised
        interrupt, snap.incomplete = e, "interrupted (KeyboardInterrupt) during the diagnosis"
    except Exception as e:  # nanprobe's own failure: the bundle still records what the monitor saw
        internal, snap.diagnosis_error = e, f"the diagnosis raised {type(e).__name__}: {e}"
        snap.incomplete = snap.diagnosis_error
    bundle: Path | None = None
    try:
        bundle = write_snapshot(snap, h.out_dir)
    except Exception as e:
        internal = internal or e
        reason = f"writing the bundle failed: {type(e).__name__}: {e}"
        try:
            bundle = write_incomplete(snap, h.out_dir, reason if snap.incomplete is None
                                      else f"{snap.incomplete}; {reason}")
        except Exception:
            snap.incomplete = f"{reason}; no bundle could be written to {h.out_dir}"
    report = build_report(snap)
    notes = ([EAGER_NOTE] if compiled else []) + ([f"bundle incomplete: {snap.incomplete}"] if snap.incomplete else [])
    note = "; ".join(notes) or None
    failure = Failure(where.step, where.epoch, where.rank, list(where.ranks), detected.phase,
                      _message(h, where, phase=detected.phase, report=report, bundle=bundle, note=note),
                      bundle=bundle, report=report, diagnosis=snap.diagnosis, internal_error=internal)
    if interrupt is not None:
        raise interrupt
    return failure


def _history_verdict(detected: Detected, histories: dict[str, Any], dtype: str | None, target: nn.Module,
                     optimizer: Any | None) -> Any:
    """When the failing step does not reproduce from its batch, the run's history may still explain it."""
    kind = detected.check.kind or "inf"
    if detected.phase == "parameters":  # the outputs may well be finite: the parameters themselves are the failure
        return parameters_verdict(histories["history"], detected.check.paths, kind=kind, model=target,
                                  optimizer=optimizer, note="seen in the parameters after an optimizer step, "
                                                            "before any output was non-finite")
    where = {"loss": "the loss, which is computed outside the model", "backward": "the gradients"}.get(
        detected.phase, "the outputs")
    return history_verdict(histories["history"], histories["layer_history"], histories["param_history"],
                           phase=detected.phase, kind=kind, dtype=dtype,
                           note=f"the value recorded in {where} did not reproduce from the saved batch alone; the "
                                "history explains it")


def warning_info(warning: EarlyWarning) -> WarningInfo:
    """An early warning as a report records it."""
    growth = warning.growth
    return WarningInfo(step=warning.step, signal=warning.signal, message=warning.message,
                       onset=growth.onset if growth else None, slope=growth.slope if growth else None,
                       decades=growth.decades if growth else None, projected_step=warning.projected_step)


def handle_warning(h: Handling, *, target: nn.Module, where: Position, warning: EarlyWarning,
                   history: list[dict[str, Any]], layers: list[LayerRow], call: StepCall | None) -> Path | None:
    """``on_warning="dump"``: a bundle of the step the warning fired at (nothing is non-finite yet, so there
    is no diagnosis; the history and the warning are the content). None when it cannot be written."""
    info = warning_info(warning)
    snap = Snapshot(name=f"{_bundle_name(h, where)}-warning", model=target,
                    batch=call.call.simplest() if call else None, rng=call.rng if call else None, phase="warning",
                    mode=call.mode if call else None, grad_enabled=call.grad_enabled if call else None,
                    method=call.method if call else None, run=h.run_name, step=where.step, epoch=where.epoch,
                    rank=where.rank, world_size=where.world_size, history=history, layers=layers,
                    policy=h.policy.value, depth=h.depth.value, source=h.source, warning=info)
    try:
        return write_snapshot(snap, h.out_dir)
    except Exception:  # a warning must never break the run
        return None
