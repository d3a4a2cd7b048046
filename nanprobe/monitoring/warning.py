"""Early warning: notice a run heading for overflow before the first non-finite value.

Four signals, each from values the monitor already read (no extra device sync):

* sustained exponential growth of the gradient norm, the loss, the outputs' |max| or the update ratio
  (:func:`nanprobe.diagnosis.dynamics.fit_growth` on the last :data:`WINDOW` steps, with thresholds strict
  enough that a healthy run's early gradient growth or a warm-up spike does not count; in the first
  :data:`GRACE` steps twice as strict; not while SGD's gradients are clipped; not when one step carries most of
  the rise);
* the weights' norm growing while the loss climbs to a new high (:meth:`GrowthWatch._weights_grow`): a large
  learning rate's loss spike that the run recovers from (its catapult) shrinks the weights instead;
* an output |max|, a layer's |max| in a full-depth snapshot, or a gradient |max| when the backward runs in
  float16 without a GradScaler, above ``fraction`` of the dtype's largest value;
* a GradScaler's loss scale that keeps falling (it halves at every overflow it skips).

(One batch that raises the gradient norm by orders of magnitude at once is warned by the monitor's spike watch,
:func:`nanprobe.monitoring.spikes.gradient_spike`, which also looks at the batch.)

The thresholds were chosen on ``benchmarks/divergence.py``'s fixed sweep and ``benchmarks/divergence_heldout.py``
with seeds 0 to 2, and are measured on a seed not used for that. Each signal warns once.

Growth of another signal while the loss fell since the growth began is the model fitting its data (outputs
growing towards large targets), not divergence: in float32 or wider it does not warn; in float16 it does, since
outputs fitting such targets come near float16's max all the same. The cheap test (the newest value is the
window's largest, 10^min_decades times its smallest, and above anything the run reached before the window) runs
every step; the fit only when that holds.
A loss that climbs from 1e-12 back to 1e-7 after a model fitted its data (Adam's steps near a minimum do that)
is not heading for overflow: a growth warning needs a value the run has not seen before. A monitor attached only
after the fit has no such earlier values and may warn about it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nanprobe.diagnosis.dynamics import CLIPPED
from nanprobe.diagnosis.growth import Growth, Thresholds, fit_growth

if TYPE_CHECKING:
    from nanprobe.monitoring.snapshots import LayerPeak

__all__ = ["ONLINE", "WINDOW", "EarlyWarning", "GrowthWatch", "narrow"]

WINDOW = 40
ONLINE = Thresholds(min_slope=0.08, min_steps=4, min_decades=3.0, min_gain=0.06)
HEADROOM_SHARE = 0.25
"""...or this share of the decades left between the window's smallest value and the dtype's max, when that is
less (float16 overflows 4.8 decades above 1: a fixed 3 decades would warn too late)."""
GRACE = 10
"""A run's first steps: initial transients are not divergence, so growth there must rise ``GRACE_FACTOR`` times
the usual decades to warn (a net whose outputs grow 60x per step from step 3 should not wait for step 10)."""
GRACE_FACTOR = 2.0
WEIGHT_GROWTH, WEIGHT_STEPS = 0.05, 2
LOSS_RISE, RECENT = 0.5, 15
"""The weights' norm growing 5% within 2 steps while the loss reaches a new high half a decade above its low
of the last 15 steps: the run diverges (measured on the held-out sweep, benchmarks/divergence_heldout.py)."""
# A step whose clip ratio is below CLIPPED was clipped. Clipping bounds each step of an optimizer whose step
# follows the gradient (SGD, with or without momentum), so the weights grow at most linearly: growth seen then is
# not projected (the dtype-headroom and loss-scale warnings still stand). Adam's step is about lr per value,
# clipped or not.
_GROWING = ("grad_norm", "loss", "output_absmax", "update_ratio")
_HEADROOM = {
    "output_absmax": ("the outputs", ""),
    "grad_absmax": ("the gradients", " (the backward computes in that dtype without a GradScaler: torch.amp.GradScaler"
                                     " or bfloat16 keeps them in range, or make the loss smaller)"),
}
"""The values checked against ``fraction`` of the compute dtype's max, with how a warning names them."""
_SCALE_DROPS = 6  # halvings of the loss scale within the window...
_SCALE_FLOOR = 1.0  # ...down below 1: even unscaled gradients overflow (a scaler calibrating down is normal)


@dataclass(frozen=True)
class EarlyWarning:
    """One signal heading for overflow: what it is, how fast it grows, and when it would overflow."""

    step: int
    signal: str
    message: str
    growth: Growth | None = None
    projected_step: int | None = None


def narrow(dtype: torch.dtype | None) -> bool:
    """A float with less range than float32 (float16): its values, and a backward computed in it, overflow
    where float32's would not."""
    return dtype is not None and dtype.is_floating_point and torch.finfo(dtype).max < torch.finfo(torch.float32).max


class GrowthWatch:
    """Watches the signals of each step; :meth:`update` returns the warnings that fire at that step."""

    def __init__(self, *, fraction: float = 0.1, window: int = WINDOW, thresholds: Thresholds = ONLINE) -> None:
        self.fraction = fraction
        self.thresholds = thresholds
        self._points: dict[str, deque[tuple[int, float]]] = {}
        self._window = window
        self._fired: set[str] = set()
        self._headroom: set[str] = set()  # the signals warned for nearing the dtype's max
        self._peak: dict[str, float] = {}  # per signal, the largest value before the window
        self._clipped: int | None = None  # the last step whose gradients were clipped, while they still are
        self.clipping_bounds_steps = False
        """Whether the optimizer's step follows the gradient (its table entry's ``step_follows_gradient``: SGD), so
        that clipping the gradient bounds it."""

    def update(self, step: int, values: dict[str, float], dtype: torch.dtype | None = None,
               loss_dtype: torch.dtype | None = None) -> list[EarlyWarning]:
        """``dtype``: the model's compute dtype (its outputs'); ``loss_dtype``: the loss tensor's, when known (a
        float16 model's loss is float32 as soon as it meets float32 targets)."""
        limit = _max(dtype)
        limits = {"output_absmax": limit, "loss": _max(loss_dtype) if loss_dtype is not None else limit}
        found: list[EarlyWarning] = []
        clip = values.get("clip_ratio")
        if clip is not None and math.isfinite(clip):
            self._clipped = step if clip < CLIPPED else None
        clipping = self.clipped_steps(step)
        for key in _GROWING:
            value = values.get(key)
            if value is None or not math.isfinite(value) or value == 0:
                continue
            points = self._points.setdefault(key, deque(maxlen=self._window))
            if points and points[-1][0] == step:
                points.pop()
            elif len(points) == self._window:  # the oldest leaves the window: it joins the run's earlier peak
                self._peak[key] = max(self._peak.get(key, 0.0), points[0][1])
            points.append((step, abs(value)))
            thresholds = self._for(points, limits.get(key), early=step < GRACE)
            if (key not in self._fired and not clipping and abs(value) > self._peak.get(key, 0.0)
                    and self._steep(points, thresholds)):
                growth = fit_growth(list(points), key, thresholds)
                if (growth is not None and not _spike(points, growth)
                        and (narrow(dtype) or not self._fitting(key, growth))):
                    found.append(self._fire(step, key, growth, limits.get(key)))
        weights = values.get("weight_norm")
        if weights is not None and math.isfinite(weights) and weights > 0:
            found += self._weights_grow(step, weights, clipping)
        for key, what in _HEADROOM.items():
            absmax = values.get(key)
            if (limit is not None and absmax is not None and key not in self._headroom
                    and absmax > self.fraction * limit):
                self._headroom.add(key)
                found.append(EarlyWarning(step, key, f"{what[0]} reach |max| {absmax:.3g}, {absmax / limit:.0%} of "
                                                     f"{str(dtype).removeprefix('torch.')}'s max {limit:.3g}{what[1]}"))
        scale = values.get("loss_scale")
        if scale is not None and "loss_scale" not in self._fired:
            scales = self._points.setdefault("loss_scale", deque(maxlen=self._window))
            scales.append((step, scale))
            drops = sum(1 for (_, a), (_, b) in zip(list(scales), list(scales)[1:]) if b < a)
            if drops >= _SCALE_DROPS and scale < _SCALE_FLOOR:
                self._fired.add("loss_scale")
                found.append(EarlyWarning(step, "loss_scale", f"the loss scale fell {drops} times in the last "
                                          f"{len(scales)} steps, to {scale:.3g}: the scaler keeps skipping "
                                          "overflowing steps"))
        return found

    def clipped_steps(self, step: int) -> bool:
        """Whether the optimizer's steps are bounded now: its step follows the gradient and the gradients of the
        last steps up to ``step`` were clipped."""
        return self.clipping_bounds_steps and self._clipped is not None and step - self._clipped <= 2

    def layer_headroom(self, step: int, peak: LayerPeak) -> list[EarlyWarning]:
        """A full-depth snapshot's layer output above ``fraction`` of its dtype's max (once per run)."""
        if "layer_absmax" in self._headroom or peak.share <= self.fraction:
            return []
        self._headroom.add("layer_absmax")
        return [EarlyWarning(step, "layer_absmax", f"layer {peak.module} reaches |max| {peak.absmax:.3g}, "
                             f"{peak.share:.0%} of {peak.dtype}'s max {peak.limit:.3g} (the per-layer snapshot of "
                             f"step {step}; the model's outputs need not show it)")]

    def _weights_grow(self, step: int, weights: float, clipping: bool) -> list[EarlyWarning]:
        """The weights' norm grows by :data:`WEIGHT_GROWTH` within :data:`WEIGHT_STEPS` steps while the loss
        climbs to a new high, :data:`LOSS_RISE` decades above its recent low: the steps blow the weights up. (A
        loss spike the run recovers from, the catapult of a large learning rate, shrinks them instead.)"""
        norms = self._points.setdefault("weight_norm", deque(maxlen=WEIGHT_STEPS + 1))
        if norms and norms[-1][0] >= step:
            return []
        norms.append((step, weights))
        losses = [(s, v) for s, v in self._points.get("loss", ()) if step - RECENT <= s <= step]
        if ("weight_norm" in self._fired or clipping or step < GRACE or len(norms) <= WEIGHT_STEPS
                or norms[0][0] != step - WEIGHT_STEPS or not losses or losses[-1][0] != step):
            return []
        grown = weights / norms[0][1] - 1
        low_step, low = min(losses, key=lambda p: p[1])
        loss = losses[-1][1]
        if grown < WEIGHT_GROWTH or loss < max(v for _, v in losses) or low <= 0 or loss < 10 ** LOSS_RISE * low:
            return []
        self._fired.add("weight_norm")
        by = f"{grown:.0%}" if grown < 10 else f"{grown + 1:.3g}-fold"
        return [EarlyWarning(step, "weight_norm", f"the weights' norm grew {by} in {WEIGHT_STEPS} steps (to "
                             f"{weights:.3g} at step {step}) while the loss rose {math.log10(loss / low):.1f} decades "
                             f"(from {low:.3g} at step {low_step} to {loss:.3g}): the optimizer's steps are blowing "
                             "the weights up (a loss spike the run recovers from shrinks them instead)")]

    def _for(self, points: deque[tuple[int, float]], limit: float | None, *, early: bool) -> Thresholds:
        """The thresholds for this window: fewer decades when the dtype's max is near, more in the first steps."""
        t = self.thresholds
        decades = t.min_decades
        low = min(v for _, v in points)
        if limit is not None and 0 < low < limit:
            decades = min(decades, math.log10(limit / low) * HEADROOM_SHARE)
        if early:
            decades *= GRACE_FACTOR
        if decades == t.min_decades:
            return t
        return Thresholds(min_slope=t.min_slope, min_steps=t.min_steps, min_decades=decades, min_gain=t.min_gain)

    def _fitting(self, key: str, growth: Growth) -> bool:
        """Whether the loss fell while ``key`` grew: the model is fitting its data (outputs growing towards
        large targets, say), not diverging. Only the dtype's headroom can make that a problem."""
        losses = self._points.get("loss")
        if key == "loss" or not losses:
            return False
        before = [v for s, v in losses if s <= growth.onset]
        return bool(before) and losses[-1][0] > growth.onset and losses[-1][1] <= before[-1]

    def _steep(self, points: deque[tuple[int, float]], thresholds: Thresholds) -> bool:
        if len(points) <= thresholds.min_steps:
            return False
        values = [v for _, v in points]
        last = values[-1]
        return last >= max(values) and last >= 10 ** thresholds.min_decades * min(values)

    def _fire(self, step: int, key: str, growth: Growth, limit: float | None) -> EarlyWarning:
        self._fired.add(key)
        if limit is None:  # norms and ratios are float32 whatever the model computes in
            limit = float(torch.finfo(torch.float32).max)
        projected = growth.projected_overflow(limit)
        message = f"{growth.describe()}"
        if projected is not None:
            message += f"; at this rate it reaches the dtype's max {limit:.3g} at about step {projected}"
        return EarlyWarning(step, key, message, growth, projected)


def _max(dtype: torch.dtype | None) -> float | None:
    return float(torch.finfo(dtype).max) if dtype is not None and dtype.is_floating_point else None


SUSTAINED = 0.5
"""Growth is sustained when at least this share of its decades came before the newest value: a single step that
jumps by decades (a loss spike, which the next step often takes back) is not a rate to project."""


def _spike(points: deque[tuple[int, float]], growth: Growth) -> bool:
    before = [v for s, v in points if growth.onset <= s < growth.last]
    start = next((v for s, v in points if s == growth.onset), None)
    if not before or start is None or start <= 0 or growth.decades <= 0:
        return False
    return math.log10(max(before) / start) < SUSTAINED * growth.decades
