"""Catch the first non-finite step of a training or eval loop cheaply and leave a post-mortem bundle.

Lives here: the monitor (it watches and decides), its failure handling (diagnose within a time budget, never
harming the run), the history, ranks' agreement, watched methods and full-depth snapshots.
May import: the core modules, ``nanprobe.diagnosis``, ``nanprobe.probe``, ``nanprobe.postmortem``,
``nanprobe.report``. Imported by: users, the framework integrations, the CLI's replay (method adapters).
"""

from __future__ import annotations

from nanprobe.monitoring.failure import Failure
from nanprobe.monitoring.monitor import Monitor, NonFiniteWarning, monitor

__all__ = ["Failure", "Monitor", "NonFiniteWarning", "monitor"]
