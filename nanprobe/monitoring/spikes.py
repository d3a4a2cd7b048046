"""One batch that raises the loss, the gradient norm or the outputs' |max| by orders of magnitude at once.

A run that fails a few steps after such a batch was blown up by it (its gradient step), not by its learning
rate; :func:`nanprobe.diagnosis.dynamics.batch_spike` reads that from the history afterwards. The batch itself is
gone by then, so the monitor looks at it while it is still there: at the step whose value jumped
(:class:`SpikeWatch`), it finds the input row whose |max| is furthest above the other rows'
(:func:`outlier_row`: one pass over the batch, only at such a step) and logs it into that step's history
record (:class:`nanprobe.report.history.Outlier`), where the verdict finds it. When the gradient norm jumped and
the optimizer's step follows the gradient, :func:`gradient_spike` warns before that step is applied.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch

from nanprobe.batches import ModelCall, batch_layout
from nanprobe.diagnosis.dynamics import BLOWUP_DECADES, BLOWUP_RATIO, SPIKE_ORDINARY, SPIKE_RECENT, SPIKING
from nanprobe.monitoring.warning import EarlyWarning
from nanprobe.report.history import Outlier
from nanprobe.sentinel import tensor_leaves

__all__ = ["OUTLIER", "Jump", "SpikeWatch", "gradient_spike", "outlier_row"]

OUTLIER = 100.0
"""A row whose |max| is at least this many times the median row's stands out."""


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


@dataclass(frozen=True)
class Jump:
    """``signal`` went from ``before`` (step ``step - 1``, an ordinary value) to ``after`` at ``step``."""

    step: int
    signal: str
    before: float
    after: float


class SpikeWatch:
    """Decides, step by step from the values the monitor read, whether this step's loss, gradient norm or
    outputs' |max| jumped by :data:`BLOWUP_DECADES` at once from an ordinary value (the verdict's own test)."""

    def __init__(self) -> None:
        self._points: dict[str, deque[tuple[int, float]]] = {key: deque(maxlen=SPIKE_RECENT + 1) for key in SPIKING}
        self._reported: set[str] = set()  # the signals reported at step _at
        self._at: int | None = None

    def update(self, step: int, values: dict[str, float]) -> list[Jump]:
        """The signals that jumped at ``step``, each reported once."""
        if step != self._at:
            self._at, self._reported = step, set()
        found: list[Jump] = []
        for key in SPIKING:
            value = values.get(key)
            if value is None or not math.isfinite(value) or value <= 0:
                continue
            points = self._points[key]
            if points and points[-1][0] == step:
                points.pop()
            points.append((step, value))
            if key not in self._reported and _jumped(points):
                self._reported.add(key)
                found.append(Jump(step, key, points[-2][1], value))
        return found


def gradient_spike(jump: Jump, outlier: Outlier | None, ratios: list[float]) -> EarlyWarning | None:
    """The early warning for a batch whose gradient norm jumped by orders of magnitude after ordinary steps
    (update ratios below :data:`BLOWUP_RATIO`), under an optimizer whose step follows the gradient: unless the
    gradients are clipped, this step moves the weights up to that many times further than the last (as many with
    plain SGD, fewer with momentum, which averages the jump in)."""
    if jump.signal != "grad_norm" or not ratios or max(ratios) >= BLOWUP_RATIO:
        return None
    row = f"; {outlier.describe()}" if outlier is not None else ""
    return EarlyWarning(jump.step, "grad_spike", f"the batch of step {jump.step} raised the gradient norm from "
                        f"{jump.before:.3g} to {jump.after:.3g} at once, after ordinary steps{row}: unless the "
                        f"gradients are clipped, this step moves the weights up to {jump.after / jump.before:.3g} "
                        "times further than the last (on_warning='raise' stops before it)")


def _jumped(points: deque[tuple[int, float]]) -> bool:
    if len(points) < 2:
        return False
    (was, before), (step, after) = points[-2], points[-1]
    if was != step - 1 or after < 10 ** BLOWUP_DECADES * before:
        return False
    earlier = sorted(v for _, v in list(points)[:-1])
    return before <= 10 ** SPIKE_ORDINARY * earlier[len(earlier) // 2]
