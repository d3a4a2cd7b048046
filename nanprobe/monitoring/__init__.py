"""Catch the first non-finite step of a training or eval loop cheaply and leave a post-mortem bundle."""

from __future__ import annotations

from nanprobe.monitoring.failure import Failure
from nanprobe.monitoring.monitor import Monitor, NonFiniteWarning, monitor

__all__ = ["Failure", "Monitor", "NonFiniteWarning", "monitor"]
