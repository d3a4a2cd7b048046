"""Full depth: the per-layer statistics of a step's batch, from a separate probed run of the same call, and the
layer output nearest its dtype's largest value (the early warning's layer headroom)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nanprobe.execution import execute
from nanprobe.monitoring.methods import method_adapter
from nanprobe.monitoring.step import StepCall
from nanprobe.probe import Probe
from nanprobe.probe.records import INPUT
from nanprobe.probe.result import ProbeResult
from nanprobe.report import LayerRow

__all__ = ["LayerPeak", "layer_peak", "layer_snapshot"]


@dataclass(frozen=True)
class LayerPeak:
    """The layer output whose |max| is the largest share of its dtype's largest value."""

    module: str
    absmax: float
    dtype: str
    limit: float

    @property
    def share(self) -> float:
        return self.absmax / self.limit


def layer_peak(result: ProbeResult) -> LayerPeak | None:
    """Over the forward outputs of every probed call (the batch itself aside), the one nearest its dtype's max."""
    best: LayerPeak | None = None
    for rec in result.records:
        if rec.phase != "forward" or rec.module == INPUT:
            continue
        for stats in rec.outputs.values():
            dtype = getattr(torch, stats.dtype.removeprefix("torch."), None)
            if stats.absmax is None or not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
                continue
            peak = LayerPeak(rec.module or "<root>", stats.absmax, str(dtype).removeprefix("torch."),
                             float(torch.finfo(dtype).max))
            if best is None or peak.share > best.share:
                best = peak
    return best


def layer_snapshot(model: nn.Module, record: StepCall, paused: Callable[[], AbstractContextManager[Any]]
                   ) -> tuple[list[LayerRow], LayerPeak | None] | None:
    """Per-layer rows of one side-effect-free probed run of ``record``'s call (hooks per module, so fast
    paths may differ from the monitored run), and its :func:`layer_peak`; ``None`` when it failed, which must
    never break training."""
    target = method_adapter(model, record.method)
    probe = Probe(target)
    try:
        with paused():
            execute(target, record.call.simplest(), mode=record.mode, rng=record.rng, instrument=lambda: probe)
        result = probe.result()
        return result.layer_rows(), layer_peak(result)
    except Exception:
        return None
