"""Fitting exponential growth to a series of (step, value): a continuous two-segment fit (a hinge) in log10
space, where exponential growth is a straight line. Before the hinge the run is healthy (flat, or a falling loss),
after it the values grow by ``slope`` decades per step; growth counts when it is steep, sustained and large
(:class:`Thresholds`). :mod:`nanprobe.diagnosis.dynamics` reads a run's history with it, the monitor's early
warning the last steps as they come.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["OFFLINE", "Growth", "Thresholds", "fit_growth", "series"]

@dataclass(frozen=True)
class Thresholds:
    """What counts as exponential growth: ``min_slope`` decades per step, sustained for ``min_steps``
    steps after the onset, and ``min_decades`` in total; and steeper than before the onset by ``min_gain``."""

    min_slope: float = 0.08
    min_steps: int = 4
    min_decades: float = 2.0
    min_gain: float = 0.06


OFFLINE = Thresholds(min_slope=0.05, min_steps=3, min_decades=1.5, min_gain=0.04)


@dataclass(frozen=True)
class Growth:
    """Exponential growth of one series: from ``onset`` (a step), ``slope`` decades per step, ``decades`` in
    all up to ``last`` (the last finite step), where it reached ``value``."""

    signal: str
    onset: int
    slope: float
    decades: float
    last: int
    value: float
    before: float  # slope before the onset (decades per step)

    def projected_overflow(self, limit: float) -> int | None:
        """The step at which the series reaches ``limit`` if the growth goes on."""
        if self.slope <= 0 or self.value <= 0 or limit <= self.value:
            return None
        return self.last + math.ceil((math.log10(limit) - math.log10(self.value)) / self.slope)

    def describe(self) -> str:
        return (f"{self.signal} grew {10 ** self.slope:.3g}x per step from step {self.onset} "
                f"({self.decades:.1f} decades, to {self.value:.3g} at step {self.last})")


def series(history: Sequence[Mapping[str, Any]], key: str) -> list[tuple[int, float]]:
    """(step, |value|) of ``key`` in the history, finite and positive values only (log space)."""
    out: list[tuple[int, float]] = []
    for row in history:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            v = abs(float(value))
            if math.isfinite(v) and v > 0:
                out.append((int(row.get("step", len(out))), v))
    return out


def _hinge(ts: list[float], ys: list[float], k: int) -> tuple[float, float, float, float]:
    """Least-squares fit of ``y = a + s1 * min(t - t_k, 0) + s2 * max(t - t_k, 0)``: (a, s1, s2, sse). At
    ``k == 0`` there is nothing before the hinge: a straight line, with ``s1`` reported as 0."""
    t0 = ts[k]
    if k == 0:
        n = len(ts)
        mt, my = sum(ts) / n, sum(ys) / n
        var = sum((t - mt) ** 2 for t in ts)
        slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var if var else 0.0
        a = my + slope * (t0 - mt)
        return a, 0.0, slope, sum((a + slope * (t - t0) - y) ** 2 for t, y in zip(ts, ys))
    cols = [(1.0, min(t - t0, 0.0), max(t - t0, 0.0)) for t in ts]
    # normal equations of a 3-parameter linear fit
    m = [[sum(c[i] * c[j] for c in cols) for j in range(3)] for i in range(3)]
    v = [sum(c[i] * y for c, y in zip(cols, ys)) for i in range(3)]
    sol = _solve3(m, v)
    if sol is None:
        return ys[k], 0.0, 0.0, math.inf
    a, s1, s2 = sol
    sse = sum((a + s1 * c[1] + s2 * c[2] - y) ** 2 for c, y in zip(cols, ys))
    return a, s1, s2, sse


def _solve3(m: list[list[float]], v: list[float]) -> tuple[float, float, float] | None:
    """Gaussian elimination with partial pivoting on a 3x3 system (None when singular)."""
    a = [[*row, val] for row, val in zip(m, v)]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-12:
            return None
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(3):
            if r != col:
                f = a[r][col] / a[col][col]
                a[r] = [x - f * y for x, y in zip(a[r], a[col])]
    return a[0][3] / a[0][0], a[1][3] / a[1][1], a[2][3] / a[2][2]


def fit_growth(points: Sequence[tuple[int, float]], signal: str = "",
               thresholds: Thresholds = OFFLINE) -> Growth | None:
    """The exponential growth at the end of ``points`` ((step, positive value), in step order), if any."""
    if len(points) < thresholds.min_steps + 1:
        return None
    ts = [float(s) for s, _ in points]
    ys = [math.log10(v) for _, v in points]
    best: tuple[float, int, float, float] | None = None
    for k in range(0, len(points) - thresholds.min_steps):
        _, s1, s2, sse = _hinge(ts, ys, k)
        if s2 > 0 and (best is None or sse < best[0] - 1e-9 * max(1.0, best[0])):  # ties: the earlier onset
            best = (sse, k, s1, s2)
    if best is None:
        return None
    _, k, s1, s2 = best
    after = len(points) - k - 1
    decades = max(ys[k:]) - ys[k]
    if (s2 < thresholds.min_slope or after < thresholds.min_steps or decades < thresholds.min_decades
            or s2 - s1 < thresholds.min_gain):
        return None
    # the growth must be where the series ends, not a spike it came back from
    if ys[-1] < max(ys[k:]) - 1.0:
        return None
    # growth that accelerates puts the hinge late: the onset is where the rise began, step by step before it
    start = k
    while start > 0 and ys[start - 1] < ys[start] - _RISE:
        start -= 1
    decades = max(ys[start:]) - ys[start]
    return Growth(signal, int(ts[start]), s2, decades, int(ts[-1]), points[-1][1], s1)


_RISE = 0.02  # decades: a step that rises by less is noise, not growth
