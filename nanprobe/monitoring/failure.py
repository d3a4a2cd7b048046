"""What the monitor does at a non-finite step: diagnose the batch (watcher paused), assemble the report and
write the post-mortem bundle. Kept apart from the hook logic so both stay small."""

from __future__ import annotations

import copy
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nanprobe._version import __version__
from nanprobe.batches import ModelCall, map_tensors
from nanprobe.monitoring.methods import method_adapter
from nanprobe.postmortem.bundle import BundleContent, write_bundle
from nanprobe.postmortem.env import collect_env
from nanprobe.restore import preserved_globals, preserved_model
from nanprobe.rng import forked_rng
from nanprobe.sentinel import FiniteCheck, mode_context

if TYPE_CHECKING:
    from nanprobe.monitoring.history import History
    from nanprobe.monitoring.monitor import MonitorSettings, StepCall
    from nanprobe.watch import Watcher

__all__ = ["CONTRACT_KEYS", "Failure", "FailureContext", "handle_failure", "probe_rows", "sample_layers"]

CONTRACT_KEYS = ("nanprobe_version", "status", "first_nonfinite", "nonfinite_parameters", "latent", "verdict",
                 "replay")
_SYNTHETIC_MODULE = {"forward": "<output>", "loss": "<loss>", "backward": "<gradients>"}


@dataclass
class FailureContext:
    model: nn.Module
    target: nn.Module  # what a diagnosis re-runs (the model, unwrapped from DDP)
    settings: MonitorSettings
    rank: int
    world_size: int
    history: History
    layer_history: list[dict[str, Any]]
    watcher: Watcher
    bundles_written: int


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
    report: dict[str, Any] | None = field(default=None, repr=False)
    diagnosis: Any | None = field(default=None, repr=False)

    @property
    def local(self) -> bool:
        return self.phase is not None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "rank": self.rank, "ranks_nonfinite": self.ranks_nonfinite,
                "phase": self.phase, "message": self.message,
                "bundle": str(self.bundle) if self.bundle is not None else None}


# -- per-layer rows -----------------------------------------------------------------------------------

def probe_rows(model: nn.Module, batch: Any, *, mode: str, backward: bool, rng: Any, watcher: Watcher,
               result_out: list[Any] | None = None) -> list[dict]:
    """Per-layer stats of one side-effect-free probed run (hooks per module, so fast paths may differ)."""
    from nanprobe.probe import probe_model

    with (watcher.paused(), forked_rng(rng), preserved_globals(), preserved_model(model),
          mode_context(model, mode, backward=backward)):
        result = probe_model(model, batch, backward=backward)
    if result_out is not None:
        result_out.append(result)
    rows = []
    for row in result.to_frame().to_dict("records"):
        rows.append({
            "index": int(row["index"]), "module": row["module"] or "<root>", "module_type": row["module_type"],
            "phase": row["phase"], "min": row["min"], "max": row["max"], "absmax": row["absmax"],
            "mean": None, "std": None, "nan": int(row["nan"] or 0),
            "inf": int((row["posinf"] or 0) + (row["neginf"] or 0)),
            "role": row["role"] if isinstance(row["role"], str) else None,
        })
    return rows


def sample_layers(model: nn.Module, record: StepCall, watcher: Watcher) -> list[dict] | None:
    """Full mode: the per-layer stats of this step's batch, from a separate probed run (None if it failed)."""
    try:
        return probe_rows(method_adapter(model, record.method), record.call.simplest(),
                          mode="train" if record.training else "eval", backward=False, rng=record.rng,
                          watcher=watcher)
    except Exception:  # a statistics snapshot must never break the user's training
        return None


# -- diagnosis ------------------------------------------------------------------------------------------

def _diagnose(ctx: FailureContext, call: StepCall, phase: str) -> tuple[dict[str, Any] | None, Any, str | None]:
    """(report dict, Diagnosis object, error text) for the failing batch, re-run from its captured RNG."""
    mode = "train" if call.training else "eval"
    backward = phase in ("loss", "backward")
    batch = call.call.simplest()
    try:
        from nanprobe.diagnosis import diagnose
    except ImportError:
        diagnose = None
    try:
        target = method_adapter(ctx.target, call.method)
        with ctx.watcher.paused(), preserved_globals():
            if diagnose is not None:
                diagnosis = diagnose(target, [batch], mode=mode, backward=backward,
                                     config=ctx.settings.run_config, rng_states=[call.rng])
                return diagnosis.to_dict(), diagnosis, None
            found: list[Any] = []
            rows = probe_rows(target, batch, mode=mode, backward=backward, rng=call.rng, watcher=ctx.watcher,
                              result_out=found)
            return _probe_only_report(rows, found[0]), None, "nanprobe.diagnosis is not available; per-layer probe only"
    except Exception as e:  # the bundle is still written: it is what the user needs most
        return None, None, f"{type(e).__name__}: {e}"


def _probe_only_report(rows: list[dict], result: Any) -> dict[str, Any]:
    first = result.first_nonfinite()
    if first is not None:
        first = {**first, "module": first["module"] or "<root>", "batch_index": 0}
    return {"status": "nonfinite" if first else "clean", "first_nonfinite": first,
            "nonfinite_parameters": list(result.nonfinite_parameters),
            "latent": [{"module": r["module"], "kind": "nan" if r["nan"] else "inf"}
                       for r in rows if r["role"] == "latent"],
            "verdict": None, "replay": [], "forward_passes": 1, "layers": rows}


# -- report and bundle --------------------------------------------------------------------------------

def _synthetic_first(ctx: FailureContext, phase: str, check: FiniteCheck) -> dict[str, Any]:
    module = _SYNTHETIC_MODULE.get(phase, "<output>")
    module_type = type(ctx.target).__name__
    if phase == "backward" and check.paths:
        module = check.paths[0].rpartition(".")[0] or "<root>"
        found = dict(ctx.target.named_modules()).get(module if module != "<root>" else "")
        module_type = type(found).__name__ if found is not None else module_type
    elif phase == "loss":
        module_type = "loss"
    return {"module": module, "module_type": module_type, "phase": "backward" if phase == "backward" else "forward",
            "kind": check.kind, "batch_index": 0, "samples": list(check.samples), "op": None, "source": None}


def build_report(ctx: FailureContext, *, step: int, epoch: int | None, phase: str, check: FiniteCheck,
                 call: StepCall | None, ranks: list[int], diagnosed: dict[str, Any] | None,
                 error: str | None) -> dict[str, Any]:
    report: dict[str, Any] = {"nanprobe_version": __version__}
    report.update(diagnosed or {"status": "clean", "first_nonfinite": None, "nonfinite_parameters": [],
                                "latent": [], "verdict": None, "replay": []})
    report["nanprobe_version"] = __version__
    reproduced = report.get("status") == "nonfinite"
    if not reproduced:
        report["status"] = "nonfinite"
        report["first_nonfinite"] = _synthetic_first(ctx, phase, check)
    settings = ctx.settings
    report.update({
        "run": settings.run_name, "step": step, "epoch": epoch, "rank": ctx.rank, "world_size": ctx.world_size,
        "ranks_nonfinite": list(ranks),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "history": ctx.history.tail(),
        "monitor": {
            "phase": phase, "detected": check.to_dict(), "reproduced": reproduced, "diagnosis_error": error,
            "policy": settings.on_nonfinite.value, "mode": settings.mode,
            "call": {"training": call.training if call else None, "grad_enabled": call.grad_enabled if call else None,
                     "method": call.method if call else None,
                     "mode": ("train" if call.training else "eval") if call else None,
                     "backward": phase in ("loss", "backward")},
        },
    })
    return report


def _plain_batch(call: StepCall) -> tuple[Any, str]:
    batch = map_tensors(call.call.simplest(), lambda t: t.detach().cpu())
    if isinstance(batch, ModelCall):
        return {"args": list(batch.args), "kwargs": dict(batch.kwargs)}, "call"
    if isinstance(batch, dict):
        return batch, "dict"
    return list(batch) if isinstance(batch, tuple) else batch, "args"


def _model_part(ctx: FailureContext, mode: str | None) -> tuple[Any, dict[str, Any]]:
    settings = ctx.settings
    if settings.save_model == "reference":
        return None, {"kind": "reference", "checkpoint": str(Path(str(settings.checkpoint)).resolve())}
    if settings.save_model == "none":
        return None, {"kind": "none"}
    meta: dict[str, Any] = {"format": 1, "mode": mode or "eval", "run_config": settings.run_config or {}}
    state = {k: v.detach().cpu() for k, v in ctx.target.state_dict().items()}
    if settings.factory:
        meta["factory"] = settings.factory
        obj = {"model_state_dict": state, "config": settings.config or {}, "nanprobe": meta}
        return obj, {"kind": "state", "file": "model.pt", "factory": settings.factory, "trust_pickle": False}
    module = ctx.target
    if any(m in module.__dict__ for m in settings.methods):  # the monitor's own wrappers do not pickle
        module = copy.copy(module)
        for m in settings.methods:
            module.__dict__.pop(m, None)
    return module, {"kind": "pickle", "file": "model.pt", "trust_pickle": True,
                        "fallback": {"model_state_dict": state, "config": settings.config or {}, "nanprobe": meta}}


def _bundle_name(ctx: FailureContext, step: int) -> str:
    name = f"{ctx.settings.run_name}-step{step}"
    return f"{name}-rank{ctx.rank}" if ctx.world_size > 1 else name


def _message(ctx: FailureContext, *, step: int, phase: str | None, report: dict[str, Any] | None,
             bundle: Path | None, ranks: list[int], note: str | None = None) -> str:
    where = f"step {step}" + (f", rank {ctx.rank} of {ctx.world_size}" if ctx.world_size > 1 else "")
    if phase is None:
        return (f"non-finite values on rank(s) {ranks} at {where}; this rank stopped with them "
                f"(bundles are written by those ranks under {ctx.settings.out_dir})")
    first = (report or {}).get("first_nonfinite") or {}
    verdict = (report or {}).get("verdict") or {}
    text = f"non-finite {first.get('kind') or ''} at {where} ({phase})".replace("  ", " ")
    if first.get("module"):
        text += f": first produced by {first['module']} ({first.get('module_type')})"
    if verdict.get("cause"):
        text += f", cause {verdict['cause']}"
    if bundle is not None:
        text += f"; bundle {bundle} (nanprobe replay {bundle})"
    elif note:
        text += f"; {note}"
    return text


def handle_failure(ctx: FailureContext, *, step: int, epoch: int | None, phase: str | None,
                   check: FiniteCheck | None, call: StepCall | None, ranks: list[int]) -> Failure:
    """Diagnose (when asked), write the bundle (when under ``max_bundles``) and describe it in one line."""
    if phase is None or check is None:
        return Failure(step, epoch, ctx.rank, list(ranks), None, _message(ctx, step=step, phase=None, report=None,
                                                                           bundle=None, ranks=ranks))
    if ctx.bundles_written >= ctx.settings.max_bundles:
        report = {"first_nonfinite": _synthetic_first(ctx, phase, check)}
        note = f"no bundle (max_bundles={ctx.settings.max_bundles} already written)"
        return Failure(step, epoch, ctx.rank, list(ranks), phase,
                       _message(ctx, step=step, phase=phase, report=report, bundle=None, ranks=ranks, note=note))
    diagnosed, diagnosis, error = (None, None, "diagnosis turned off (diagnose=False)")
    if ctx.settings.diagnose and call is not None:
        diagnosed, diagnosis, error = _diagnose(ctx, call, phase)
    elif call is None:
        error = "no model call was seen before this check: nothing to diagnose"
    report = build_report(ctx, step=step, epoch=epoch, phase=phase, check=check, call=call, ranks=ranks,
                          diagnosed=diagnosed, error=error)
    mode = report["monitor"]["call"]["mode"]
    model_obj, model_info = _model_part(ctx, mode)
    batch, batch_kind = _plain_batch(call) if call is not None else (None, "none")
    report["bundle"] = {"model": {k: v for k, v in model_info.items() if k != "fallback"}, "batch_kind": batch_kind,
                        "device": str(next((p.device for p in ctx.target.parameters()), torch.device("cpu")))}
    layers = list(report.get("layers") or [])
    if not layers and ctx.layer_history:
        layers = list(ctx.layer_history[-1]["layers"])
    content = BundleContent(report=report, batch=batch, rng=call.rng.to_dict() if call and call.rng else None,
                            layers=layers, env=collect_env(ctx.target), model=model_obj,
                            model_fallback=model_info.get("fallback"))
    bundle = write_bundle(ctx.settings.out_dir, _bundle_name(ctx, step), content)
    return Failure(step, epoch, ctx.rank, list(ranks), phase,
                   _message(ctx, step=step, phase=phase, report=report, bundle=bundle, ranks=ranks),
                   bundle=bundle, report=report, diagnosis=diagnosis)
