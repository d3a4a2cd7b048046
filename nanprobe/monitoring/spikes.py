"""One batch that raises the loss or the gradient norm by orders of magnitude at once: which row of it stands out.

A run that fails a few steps after such a batch was blown up by it (its gradient step), not by its learning
rate; :func:`nanprobe.diagnosis.dynamics.batch_spike` reads that from the history afterwards. The batch itself is
gone by then, so the monitor looks at it while it is still there: at the step whose value jumped, it finds the
input row whose |max| is furthest above the other rows' (one pass over the batch, only at such a step) and logs
it into that step's history record (:data:`FIELDS`), where the verdict finds it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from nanprobe.batches import ModelCall, batch_layout
from nanprobe.diagnosis.dynamics import BLOWUP_DECADES, SPIKE_ORDINARY, SPIKING
from nanprobe.sentinel import tensor_leaves

__all__ = ["FIELDS", "OUTLIER", "Outlier", "SpikeWatch", "outlier_row"]

OUTLIER = 100.0
"""A row whose |max| is at least this many times the median row's stands out."""
FIELDS = ("outlier_input", "outlier_row", "outlier_absmax", "outlier_median")
"""The history keys of an outlier row: which input, which row, its |max| and the rows' median |max|."""
_RECENT = 15


@dataclass(frozen=True)
class Outlier:
    """Row ``row`` of input ``path`` has |max| ``absmax``; the batch's rows have a median |max| of ``median``."""

    path: str
    row: int
    absmax: float
    median: float

    def record(self) -> dict[str, Any]:
        return dict(zip(FIELDS, (self.path, self.row, self.absmax, self.median)))


def outlier_row(call: ModelCall) -> Outlier | None:
    """The input row whose |max| is furthest above the median row's, when it is :data:`OUTLIER` times above.
    Rows are along the batch dimension (dim 1 of a sequence-first input). One host read."""
    size, seq_first = batch_layout(call)
    if size is None or size < 3:
        return None
    candidates: list[tuple[str, torch.Tensor]] = []
    for path, tensor in tensor_leaves(call, prefix="batch"):
        dim = 1 if seq_first and tensor.dim() >= 3 else 0
        if tensor.dim() > dim and int(tensor.shape[dim]) == size and tensor.numel() > 0 and not tensor.is_complex():
            flat = tensor.detach().movedim(dim, 0).reshape(size, -1)  # a view when the rows lead (no copy)
            lo, hi = flat.amin(dim=1).float(), flat.amax(dim=1).float()  # no |x| temporary the batch's size
            candidates.append((path, torch.maximum(hi, -lo)))
    if not candidates:
        return None
    per_row = torch.stack([rows.to(candidates[0][1].device) for _, rows in candidates]).cpu()  # (inputs, rows)
    medians = per_row.median(dim=1).values
    ratios = (per_row / medians.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(1)).nan_to_num(0.0)
    which, row = divmod(int(ratios.flatten().argmax()), size)
    absmax, median = float(per_row[which, row]), float(medians[which])
    if not math.isfinite(absmax) or median <= 0 or absmax < OUTLIER * median:
        return None
    return Outlier(candidates[which][0], row, absmax, median)


class SpikeWatch:
    """Decides, step by step from the values the monitor read, whether this step's loss or gradient norm jumped
    by :data:`BLOWUP_DECADES` at once from an ordinary value (the same test as the verdict's)."""

    def __init__(self) -> None:
        self._points: dict[str, deque[tuple[int, float]]] = {key: deque(maxlen=_RECENT + 1) for key in SPIKING}
        self._spiked: int | None = None  # the last step reported

    def update(self, step: int, values: dict[str, float]) -> str | None:
        """The signal that jumped at ``step`` (once per step), or None."""
        found = None
        for key in SPIKING:
            value = values.get(key)
            if value is None or not math.isfinite(value) or value <= 0:
                continue
            points = self._points[key]
            if points and points[-1][0] == step:
                points.pop()
            points.append((step, value))
            if found is None and step != self._spiked and _jumped(points):
                found = key
        if found is not None:
            self._spiked = step
        return found


def _jumped(points: deque[tuple[int, float]]) -> bool:
    if len(points) < 2:
        return False
    (was, before), (step, after) = points[-2], points[-1]
    if was != step - 1 or after < 10 ** BLOWUP_DECADES * before:
        return False
    earlier = sorted(v for _, v in list(points)[:-1])
    return before <= 10 ** SPIKE_ORDINARY * earlier[len(earlier) // 2]
