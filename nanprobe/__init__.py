"""nanprobe: find where a PyTorch model goes NaN, why, and keep it from coming back.

Names are re-exported lazily: ``import nanprobe`` stays cheap (the pytest plugin imports it in every session)
and torch is imported only when one of them is first used.

Layers, each importing only those below it: the core modules (``batches``, ``walk``, ``kinds``, ``stats``,
``rng``, ``restore``, ``sentinel``, ``execution``, ``watch``) and ``report``; then ``probe``; ``diagnosis``;
``postmortem``; ``monitoring``, ``testing`` and ``integrations``; and at the edges ``render``, ``cli`` and
``pytest_plugin``. May import: nothing of its own but ``_version`` and ``errors`` (the rest lazily, by name).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nanprobe._version import __version__
from nanprobe.errors import InputError, NanprobeError, NonFiniteError

if TYPE_CHECKING:
    from nanprobe.diagnosis import Diagnosis, diagnose
    from nanprobe.monitoring import Monitor, monitor
    from nanprobe.probe import CallRecord, Probe, ProbeResult, probe_model
    from nanprobe.scan import ScanResult, scan_checkpoint
    from nanprobe.stats import TensorStats, tensor_stats
    from nanprobe.testing import NanGuard, StabilityReport, assert_stable

_EXPORTS = {
    "CallRecord": "nanprobe.probe",
    "Diagnosis": "nanprobe.diagnosis",
    "Monitor": "nanprobe.monitoring",
    "NanGuard": "nanprobe.testing",
    "Probe": "nanprobe.probe",
    "ProbeResult": "nanprobe.probe",
    "ScanResult": "nanprobe.scan",
    "StabilityReport": "nanprobe.testing",
    "TensorStats": "nanprobe.stats",
    "assert_stable": "nanprobe.testing",
    "diagnose": "nanprobe.diagnosis",
    "monitor": "nanprobe.monitoring",
    "probe_model": "nanprobe.probe",
    "scan_checkpoint": "nanprobe.scan",
    "tensor_stats": "nanprobe.stats",
}

__all__ = [
    "CallRecord",
    "Diagnosis",
    "InputError",
    "Monitor",
    "NanGuard",
    "NanprobeError",
    "NonFiniteError",
    "Probe",
    "ProbeResult",
    "ScanResult",
    "StabilityReport",
    "TensorStats",
    "__version__",
    "assert_stable",
    "diagnose",
    "monitor",
    "probe_model",
    "scan_checkpoint",
    "tensor_stats",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nanprobe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
