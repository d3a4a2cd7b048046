"""Full depth: the per-layer statistics of a step's batch, from a separate probed run of the same call."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from torch import nn

from nanprobe.execution import execute
from nanprobe.monitoring.methods import method_adapter
from nanprobe.monitoring.step import StepCall
from nanprobe.probe import Probe
from nanprobe.report import LayerRow

__all__ = ["layer_snapshot"]


def layer_snapshot(model: nn.Module, record: StepCall, paused: Callable[[], AbstractContextManager[Any]]
                   ) -> list[LayerRow] | None:
    """Per-layer rows of one side-effect-free probed run of ``record``'s call (hooks per module, so fast
    paths may differ from the monitored run); ``None`` when it failed, which must never break training."""
    target = method_adapter(model, record.method)
    probe = Probe(target)
    try:
        with paused():
            execute(target, record.call.simplest(), mode=record.mode, rng=record.rng, instrument=lambda: probe)
    except Exception:
        return None
    return probe.result().layer_rows()
