"""Catch the first non-finite step of a training or eval loop cheaply and leave a post-mortem bundle."""

from __future__ import annotations

from nanprobe.monitor.failure import Failure
from nanprobe.monitor.monitor import Monitor, NonFiniteWarning, monitor

__all__ = ["Failure", "Monitor", "NonFiniteWarning", "monitor"]
