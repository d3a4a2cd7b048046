"""A guard failure as a post-mortem bundle, in the monitor's format (assembled by ``nanprobe.postmortem``)."""

from __future__ import annotations

from pathlib import Path

from nanprobe.execution import parse_mode
from nanprobe.postmortem.assemble import ModelSource, Snapshot, write_snapshot
from nanprobe.report import FirstNonfinite, PytestInfo
from nanprobe.testing.failures import GuardFailure

__all__ = ["failure_snapshot", "write_failure_bundle"]


def failure_snapshot(failure: GuardFailure, name: str, *, test_id: str) -> Snapshot:
    """What the bundle of a guard failure is made of: the watched model (pickled: replay needs
    ``--trust-pickle``), the failing call's batch and RNG, the diagnosis, and the test it came from."""
    model = failure.module
    first = failure.first_nonfinite or FirstNonfinite(
        "", type(model).__name__ if model is not None else "", "backward" if failure.phase == "backward" else "forward",
        failure.kind, samples=list(failure.samples))  # type: ignore[arg-type]
    info = PytestInfo(test=test_id, message=failure.message, model=failure.model, phase=failure.phase,
                      kind=failure.kind, samples=list(failure.samples), paths=list(failure.paths),
                      call_index=failure.call_index, mode=failure.mode, first_nonfinite=failure.first_nonfinite,
                      note=failure.note)
    return Snapshot(name=name, model=model, batch=failure.batch, rng=failure.rng, phase=failure.phase,
                    diagnosis=failure.diagnosis, mode=parse_mode(failure.mode) if failure.mode else None,
                    method=None, first_nonfinite=first, pytest=info,
                    source=ModelSource(how="state" if model is not None else "none"))


def write_failure_bundle(failure: GuardFailure, directory: str | Path, name: str, *, test_id: str) -> Path:
    """Write ``directory/name`` (atomically) and return its path."""
    return write_snapshot(failure_snapshot(failure, name, test_id=test_id), directory)
