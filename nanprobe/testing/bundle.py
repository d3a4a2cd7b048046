"""A guard failure as a post-mortem bundle, in the monitor's format (written by its bundle writer)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import torch

from nanprobe._version import __version__
from nanprobe.batches import ModelCall, map_tensors
from nanprobe.testing.failures import GuardFailure

__all__ = ["failure_report", "write_failure_bundle"]


def failure_report(failure: GuardFailure, *, test_id: str) -> dict[str, Any]:
    """The contract's JSON report (from the diagnosis when there is one) plus a ``pytest`` section."""
    diagnosis = failure.diagnosis
    report: dict[str, Any] = {"nanprobe_version": __version__}
    if diagnosis is not None and hasattr(diagnosis, "to_dict"):
        report.update(diagnosis.to_dict())
    if report.get("status") != "nonfinite" or not report.get("first_nonfinite"):
        report.update(status="nonfinite", first_nonfinite=failure.first_nonfinite or {
            "module": "", "module_type": type(failure.module).__name__ if failure.module is not None else None,
            "phase": "backward" if failure.phase == "backward" else "forward", "kind": failure.kind,
            "batch_index": 0, "samples": list(failure.samples), "op": None, "source": None})
        report.setdefault("verdict", None)
    report["nanprobe_version"] = __version__
    report["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    report["pytest"] = {"test": test_id, "message": failure.message,
                        **{k: v for k, v in failure.to_dict().items() if k != "diagnosis"}}
    return report


def _plain_batch(batch: Any) -> tuple[Any, str]:
    plain = map_tensors(batch, lambda t: t.detach().cpu())
    if isinstance(plain, ModelCall):
        return {"args": list(plain.args), "kwargs": dict(plain.kwargs)}, "call"
    if isinstance(plain, dict):
        return plain, "dict"
    return (list(plain) if isinstance(plain, tuple) else plain), "args"


def write_failure_bundle(failure: GuardFailure, directory: str | Path, name: str, *, test_id: str) -> Path:
    """Write ``directory/name`` (atomically, by :func:`nanprobe.postmortem.write_bundle`) and return its path."""
    from nanprobe.postmortem.bundle import BundleContent, write_bundle
    from nanprobe.postmortem.env import collect_env

    model = failure.module
    report = failure_report(failure, test_id=test_id)
    batch, batch_kind = _plain_batch(failure.batch) if failure.batch is not None else (None, "none")
    fallback = None
    if model is not None:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        fallback = {"model_state_dict": state, "config": {},
                    "nanprobe": {"format": 1, "mode": failure.mode or "eval", "run_config": {}}}
    device = next((p.device for p in model.parameters()), torch.device("cpu")) if model is not None else "cpu"
    model_info = {"kind": "pickle", "file": "model.pt", "trust_pickle": True} if model is not None else {"kind": "none"}
    report["bundle"] = {"model": model_info, "batch_kind": batch_kind, "device": str(device)}
    backward = failure.phase == "backward"
    report["monitor"] = {"phase": failure.phase, "reproduced": bool(failure.first_nonfinite),
                         "call": {"mode": failure.mode or "eval", "training": failure.mode == "train",
                                  "grad_enabled": None, "method": None, "backward": backward}}
    rng = failure.rng.to_dict() if failure.rng is not None and hasattr(failure.rng, "to_dict") else None
    content = BundleContent(report=report, batch=batch, rng=rng, layers=list(report.get("layers") or []),
                            env=collect_env(model), model=model, model_fallback=fallback)
    return write_bundle(directory, name, content)
