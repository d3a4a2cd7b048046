"""Training dynamics: does a run's history show divergence, from which step, and in what?

Exponential growth of the loss, the gradient norm, the outputs' |max| or the update ratio, found by
:func:`nanprobe.diagnosis.growth.fit_growth`, is a divergence (:func:`analyze`); the onset is where the loss
left its floor, or a learning-rate rise that came before. Two kinds of failure are too quick for a fit:

* a learning rate orders of magnitude too high (``3e3`` for ``3e-3``) blows a run up in one to three steps
  (:func:`blowup`: the size of the rise, and the update ratio of the step before it);
* one batch with outliers raises the loss or the gradient norm by orders of magnitude at once after healthy
  steps, and its update blows the weights up (:func:`batch_spike`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nanprobe.diagnosis.growth import OFFLINE, Growth, Thresholds, fit_growth, series
from nanprobe.report.history import Outlier

__all__ = ["OFFLINE", "SIGNALS", "BrokenStep", "Divergence", "Growth", "Spike", "Thresholds", "analyze",
           "batch_overflow", "batch_spike", "blowup", "broken_by_step", "fit_growth", "series"]

SIGNALS = ("grad_norm", "loss", "output_absmax", "update_ratio")
"""History keys whose exponential growth means divergence."""
ONSET_SIGNALS = ("grad_norm", "loss", "output_absmax")
"""The signals whose growth dates the onset (the update ratio also steps up when the learning rate does)."""
CLIPPED = 0.999
"""A ``clip_ratio`` below this (the gradient norm the optimizer used over the norm after backward): clipped."""
WEIGHTS_GREW = 1.25
"""The weights' norm (the monitor's ``weight_norm``) this many times its value at the onset: named as evidence."""
LR_LEAD = 30
"""A learning-rate increase at most this many steps before the growth is taken as where it began."""
BLOWUP_DECADES, BLOWUP_STEPS, BLOWUP_RISE = 3.0, 3, 0.5
"""A blow-up: a signal rising by at least this many decades within this many steps, each step by at least
``BLOWUP_RISE`` decades, up to the last finite step (too few steps for :func:`fit_growth`)."""
BLOWUP_RATIO = 0.5
"""...after an optimizer step whose update was at least this share of the weights' norm (healthy steps change
the weights by about a thousandth): the step, not the batch, blew the values up. Without an update ratio, the
rise must span two steps or more."""
SPIKING = ("loss", "grad_norm", "output_absmax")
"""The values of one step's batch: a batch with outliers raises them at once."""
SPIKE_ORDINARY, SPIKE_RECENT = 0.5, 15
"""A value this many decades or less above the median of the ``SPIKE_RECENT`` steps before it is ordinary (not
already rising)."""
TYPO_LR = 10.0
"""A learning rate this large that blew a run up may be a lost minus sign (``3e3`` for ``3e-3``): the fix says so."""


@dataclass(frozen=True)
class BrokenStep:
    """The first step whose update ratio was non-finite: its ``optimizer.step()`` wrote NaN/Inf into the
    parameters (into the strided sample the ratio reads, at least). ``grad_norm``: that step's gradient norm,
    None when it was not finite (or not recorded)."""

    step: int
    ratio: str
    grad_norm: float | None

    def describe(self) -> str:
        made = (f"from finite gradients (norm {self.grad_norm:.3g})" if self.grad_norm is not None
                else "its gradients were not finite (or not recorded)")
        return f"the update ratio of step {self.step} was {self.ratio}: that step's optimizer.step() wrote " \
               f"non-finite values into the parameters; {made}"


def broken_by_step(history: Sequence[Mapping[str, Any]]) -> BrokenStep | None:
    """The first step of ``history`` whose ``update_ratio`` is NaN/Inf (as a float, or as the string a JSON-ready
    history holds)."""
    for row in history:
        value = row.get("update_ratio")
        text = value if isinstance(value, str) else None
        if isinstance(value, float) and not math.isfinite(value):
            text = "nan" if value != value else "inf"
        if text in ("nan", "inf", "-inf"):
            norm = row.get("grad_norm")
            finite = isinstance(norm, (int, float)) and math.isfinite(norm)
            return BrokenStep(int(row.get("step", 0)), text, float(norm) if finite else None)
    return None


@dataclass(frozen=True)
class Spike:
    """One step's batch raised ``signal`` (the loss or the gradient norm) by ``decades`` at once, from an
    ordinary ``before`` to ``after``, while the steps before it had changed the weights by at most ``ratio`` of
    their norm."""

    step: int
    before: float
    after: float
    ratio: float
    signal: str = "loss"
    outlier: Outlier | None = None
    """The batch's row that stood out, as the monitor logged it."""

    def batch_fix(self) -> str:
        if self.outlier is None:
            return "look in that step's batch for values far outside the others' range (inputs or targets), and " \
                   "drop or fix them"
        return (f"drop or fix row {self.outlier.row} of that step's batch ({self.outlier.path} is far outside the "
                "other rows' range)")

    def row(self) -> str | None:
        return self.outlier.describe() if self.outlier is not None else None

    @property
    def decades(self) -> float:
        return math.log10(self.after / self.before)

    def describe(self) -> str:
        what = {"loss": "the loss", "grad_norm": "the gradient norm",
                "output_absmax": "the outputs' |max|"}.get(self.signal, self.signal)
        return (f"the batch of step {self.step} raised {what} from {self.before:.3g} to {self.after:.3g} at once "
                f"({self.decades:.1f} decades), after steps that had changed the weights by at most "
                f"{self.ratio:.1%} of their norm")


@dataclass
class Divergence:
    """A run that diverged: the signals that grew, the step where growth began, and what grew fastest."""

    growths: list[Growth]
    onset: int
    lr: float | None = None
    clip_at: float | None = None  # a gradient norm typical of the healthy steps
    fastest: str | None = None  # a layer or parameter group that stands out
    fastest_evidence: str | None = None
    loss_scale_falling: bool = False
    clipped: tuple[int, float] | None = None  # the last step whose gradients were clipped: (step, clip ratio)
    blown: tuple[int, float] | None = None  # a blow-up's optimizer step: (step, update ratio), see blowup()
    spike: Spike | None = None  # one batch started it, see batch_spike()
    notes: list[str] = field(default_factory=list)

    def headline(self) -> str:
        """What started it, in one clause: the batch that spiked, or the fastest growth."""
        if self.spike is not None:
            row = f"; {self.spike.row()}" if self.spike.outlier is not None else ""
            return f"{self.spike.describe()}: one batch, not the learning rate, started it{row}"
        return self.growths[0].describe()

    def summary(self) -> str:
        if self.spike is not None:
            return f"one batch blew the run up: {self.headline()}; the non-finite value at this step is where it ended."
        return f"the run diverged: {self.growths[0].describe()}; the non-finite value at this step is where that " \
               "growth ended."

    @property
    def strength(self) -> float:
        return max(g.decades for g in self.growths)

    def fix(self, dtype: str | None = None) -> str:
        parts = []
        if self.spike is not None:
            parts.append(f"the run was healthy until step {self.spike.step}: {self.spike.batch_fix()}")
        elif self.blown is not None:
            typo = f" (if {self.lr:.3g} was meant as {_sign_lost(self.lr):.3g}, the exponent lost its minus sign)" \
                if self.lr is not None and self.lr >= TYPO_LR else ""
            was = f"the learning rate in effect was {self.lr:.3g}" if self.lr is not None else "the learning rate"
            parts.append(f"{was} and step {self.blown[0]}'s update was {self.blown[1]:.0%} of the weights' norm: "
                         f"lower it by orders of magnitude{typo}")
        elif self.lr is not None:
            parts.append(f"the learning rate in effect was {self.lr:.3g}: lower it (by 10x or more) or warm it up")
        else:
            parts.append("lower the learning rate (by 10x or more) or warm it up")
        if self.clipped is not None:
            parts.append(f"the gradients were already clipped (step {self.clipped[0]} used {self.clipped[1]:.2g} of "
                         "their norm), and clipping did not hold this run")
        elif self.clip_at is not None and self.blown is None:  # a step lr times a clipped norm still blows up
            why = " so that one batch cannot blow the weights up" if self.spike is not None else ""
            parts.append(f"clip gradients at about {self.clip_at:.3g} (the norm of the healthy steps){why}: "
                         f"torch.nn.utils.clip_grad_norm_(model.parameters(), {self.clip_at:.3g})")
        if dtype == "float16" or self.loss_scale_falling:
            parts.append("in float16 use a loss scaler (torch.amp.GradScaler) or train in bfloat16")
        if self.fastest:
            parts.append(f"look first at {self.fastest}, which grew fastest")
        return "; ".join(parts)


def analyze(history: Sequence[Mapping[str, Any]], layer_history: Sequence[Mapping[str, Any]] = (),
            param_history: Sequence[Mapping[str, Any]] = ()) -> Divergence | None:
    """Whether the run's history shows divergence, from which step, and what grew fastest.

    ``history``: one row per step (``step``, ``loss``, ``grad_norm``, ``lr``, ``output_absmax``,
    ``loss_scale``, ...); ``layer_history``: ``{"step", "layers": [{"module", "absmax"}, ...]}`` snapshots;
    ``param_history``: ``{"step", "norms": {group: gradient norm}}`` rows."""
    growths = [g for key in SIGNALS if (g := fit_growth(series(history, key), key)) is not None]
    spike = batch_spike(history)
    if spike is not None and spike.step >= _last_step(history):
        return None  # the failing step's own batch: not a divergence (see batch_overflow)
    if spike is not None:  # dated by the batch; the fit, if any, only saw the spike's aftermath
        rise = Growth(spike.signal, spike.step - 1, spike.decades, spike.decades, spike.step, spike.after, 0.0)
        found = Divergence(growths=[rise, *sorted(growths, key=lambda g: -g.decades)], onset=spike.step,
                           spike=spike)
        return _completed(found, history, layer_history, param_history, spike.step - 1)
    if not growths:
        blown = blowup(history)
        return _completed(blown, history, layer_history, param_history, blown.onset) if blown is not None else None
    # the loss dates it best (training lowers it, so its floor is where the run turned); else the first fit
    loss = next((g for g in growths if g.signal == "loss"), None)
    dated = [g.onset for g in growths if g.signal in ONSET_SIGNALS] or [g.onset for g in growths]
    onset = _left_floor(history, loss) if loss is not None else min(dated)
    found = Divergence(growths=sorted(growths, key=lambda g: -g.decades), onset=onset)
    later = _lr_raised_later(history, onset)
    if later is not None:
        step, before, after = later
        found.onset = step
        found.notes.append(f"the learning rate rose from {before:.3g} to {after:.3g} at step {step}; the loss had "
                           "not risen before it")
    raised = _lr_raised(history, onset) if later is None else None
    if raised is not None:
        step, before, after = raised
        found.onset = step
        found.notes.append(f"the learning rate rose from {before:.3g} to {after:.3g} at step {step}, "
                           f"{onset - step} step(s) before the growth")
    return _completed(found, history, layer_history, param_history, onset)


def _completed(found: Divergence, history: Sequence[Mapping[str, Any]], layer_history: Sequence[Mapping[str, Any]],
               param_history: Sequence[Mapping[str, Any]], healthy_until: int) -> Divergence:
    """The learning rate, a clipping norm (the median gradient norm up to ``healthy_until``), the weights' growth,
    the clipping and loss scale the history shows, and what grew fastest."""
    onset = found.onset
    found.lr = _value_at(history, "lr", found.growths[0].last)
    healthy = [v for s, v in series(history, "grad_norm") if s <= healthy_until]
    if healthy:
        found.clip_at = sorted(healthy)[len(healthy) // 2]
    weights = series(history, "weight_norm")
    at_onset = [(s, v) for s, v in weights if s <= found.onset][-1:] or weights[:1]
    if at_onset and weights[-1][1] >= WEIGHTS_GREW * at_onset[0][1]:
        found.notes.append(f"the weights' norm grew from {at_onset[0][1]:.3g} (step {at_onset[0][0]}) to "
                           f"{weights[-1][1]:.3g} (step {weights[-1][0]}): the optimizer's steps blew them up")
    clipped = [(s, v) for s, v in series(history, "clip_ratio") if v < CLIPPED]
    found.clipped = clipped[-1] if clipped else None
    scales = [v for _, v in series(history, "loss_scale")]
    found.loss_scale_falling = len(scales) >= 4 and scales[-1] < scales[0] / 8
    found.fastest, found.fastest_evidence = _fastest(layer_history, param_history, onset)
    return found


def batch_spike(history: Sequence[Mapping[str, Any]]) -> Spike | None:
    """One batch that blew the run up: within the last :data:`BLOWUP_STEPS` finite steps, a :data:`SPIKING` value
    (the loss, the gradient norm, the outputs' |max|) rose by :data:`BLOWUP_DECADES` or more in one step from an
    ordinary value (at most :data:`SPIKE_ORDINARY` decades above the median of the :data:`SPIKE_RECENT` steps
    before) and stayed up, while the update ratios
    of the steps before it were below :data:`BLOWUP_RATIO`: the weights had not been blown up, so the batch made
    it. Needs the update ratio of the step just before (an optimizer the monitor knows)."""
    ratios = dict(series(history, "update_ratio"))
    found: list[Spike] = []
    for key in SPIKING:
        points = series(history, key)
        for i in range(max(1, len(points) - BLOWUP_STEPS), len(points)):
            (was, before), (step, after) = points[i - 1], points[i]
            ordinary = _median([v for _, v in points[max(0, i - SPIKE_RECENT):i]])
            if (was != step - 1 or after < 10 ** BLOWUP_DECADES * before or before > 10 ** SPIKE_ORDINARY * ordinary
                    or min(v for _, v in points[i:]) < 10 ** BLOWUP_DECADES * before or was not in ratios):
                continue
            earlier = max(ratios[s] for s in range(step - BLOWUP_STEPS, step) if s in ratios)
            if earlier < BLOWUP_RATIO:
                found.append(Spike(step, before, after, earlier, key, _outlier(history, step)))
            break
    return min(found, key=lambda spike: (spike.step, SPIKING.index(spike.signal))) if found else None


def batch_overflow(history: Sequence[Mapping[str, Any]]) -> Spike | None:
    """The failing step's own batch raised its values by orders of magnitude at once, after healthy steps
    (:func:`batch_spike` at the history's last step): that batch overflowed, the run did not diverge."""
    spike = batch_spike(history)
    return spike if spike is not None and spike.step >= _last_step(history) else None


def _last_step(history: Sequence[Mapping[str, Any]]) -> int:
    return max((int(row.get("step", 0)) for row in history), default=0)


def _outlier(history: Sequence[Mapping[str, Any]], step: int) -> Outlier | None:
    """The outlier row the monitor logged at ``step`` (see :mod:`nanprobe.monitoring.spikes`)."""
    return Outlier.of(next((r for r in history if r.get("step") == step), {}))


def blowup(history: Sequence[Mapping[str, Any]]) -> Divergence | None:
    """A run blown up within :data:`BLOWUP_STEPS` steps: the loss, the gradient norm or the outputs' |max| rose
    step after step (:data:`BLOWUP_RISE` decades each) by :data:`BLOWUP_DECADES` or more up to the last finite
    step, after an optimizer step whose update ratio was at least :data:`BLOWUP_RATIO` (or over two steps or more
    when no ratio was recorded). A batch that makes one huge loss does so before any step moved the weights: its
    rise has no such step. :func:`analyze` adds what the rest of the history says (learning rate, clipping)."""
    ratios = series(history, "update_ratio")
    growths: list[Growth] = []
    causes: list[tuple[int, float]] = []
    for key in ONSET_SIGNALS:
        points = series(history, key)
        if len(points) < 2 or points[-1][1] < max(v for _, v in points):
            continue
        start = len(points) - 1
        while (start > 0 and points[start][1] >= 10 ** BLOWUP_RISE * points[start - 1][1]
               and points[-1][0] - points[start - 1][0] <= BLOWUP_STEPS):
            start -= 1
        (first, low), (last, high) = points[start], points[-1]
        decades = math.log10(high / low)
        big = [(s, v) for s, v in ratios if first <= s < last and v >= BLOWUP_RATIO]
        if decades < BLOWUP_DECADES or not (big or (not ratios and len(points) - start >= 3)):
            continue
        growths.append(Growth(key, first, decades / (last - first), decades, last, high, 0.0))
        causes += big
    if not growths:
        return None
    growths.sort(key=lambda g: -g.decades)
    found = Divergence(growths=growths, onset=min(g.onset for g in growths))
    if causes:
        step, ratio = found.blown = min(causes)
        found.notes.append(f"the optimizer step of step {step} changed the weights by {ratio:.0%} of their norm "
                           "(update ratio; a healthy step's is typically about 0.1%): the learning rate blew them up")
    return found


def _sign_lost(lr: float) -> float:
    """``lr`` with its decimal exponent negated: 3e3 -> 3e-3."""
    exponent = math.floor(math.log10(lr))
    return lr / 10.0 ** exponent * 10.0 ** -exponent


def _left_floor(history: Sequence[Mapping[str, Any]], growth: Growth) -> int:
    """Where the growth began: the last step, up to the fitted onset, at which the series was within 10% of
    its lowest value so far (a slow start puts the fitted hinge a few steps late)."""
    best, began = math.inf, growth.onset
    for step, value in series(history, growth.signal):
        if step > growth.onset:
            break
        best = min(best, value)
        if value <= 1.1 * best:
            began = step
    return began


def _lr_raised(history: Sequence[Mapping[str, Any]], onset: int) -> tuple[int, float, float] | None:
    """The last learning-rate increase (by at least 1.5x) within :data:`LR_LEAD` steps before ``onset``:
    (step, before, after)."""
    found = None
    previous: float | None = None
    for step, lr in series(history, "lr"):
        if step > onset:
            break
        if previous is not None and lr >= 1.5 * previous and onset - step <= LR_LEAD:
            found = (step, previous, lr)
        previous = lr
    return found


def _lr_raised_later(history: Sequence[Mapping[str, Any]], onset: int) -> tuple[int, float, float] | None:
    """The first learning-rate increase (by at least 1.5x) after ``onset`` when the loss had not risen before
    it (the median of the 5 losses before it at most twice the median of the 5 up to ``onset``): a noisy loss,
    minibatch by minibatch, can put the fitted onset long before the increase that started the growth."""
    losses = series(history, "loss")
    floor = [v for s, v in losses if s <= onset][-5:]
    previous: float | None = None
    for step, lr in series(history, "lr"):
        if step > onset and previous is not None and lr >= 1.5 * previous:
            before = [v for s, v in losses if s < step][-5:]
            if floor and before and _median(before) <= 2 * _median(floor):
                return step, previous, lr
            return None
        previous = lr
    return None


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _value_at(history: Sequence[Mapping[str, Any]], key: str, step: int) -> float | None:
    value = None
    for row in history:
        if row.get("step", 0) <= step and isinstance(row.get(key), (int, float)):
            value = float(row[key])
    return value


def _fastest(layer_history: Sequence[Mapping[str, Any]], param_history: Sequence[Mapping[str, Any]],
             onset: int) -> tuple[str | None, str | None]:
    """The layer (full-depth snapshots) or parameter group whose values grew the most since the onset,
    when it grew at least twice as many decades as the median of the others."""
    growth: dict[str, float] = {}
    for rows, key in ((layer_history, "layers"), (param_history, "norms")):
        per: dict[str, list[tuple[int, float]]] = {}
        for snap in rows:
            items = snap.get(key) or {}
            pairs = (items.items() if isinstance(items, Mapping)
                     else ((r.get("module"), r.get("absmax")) for r in items))
            for name, value in pairs:
                if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 and name is not None:
                    per.setdefault(str(name) or "<root>", []).append((int(snap.get("step", 0)), float(value)))
        for name, points in per.items():
            before = [v for s, v in points if s <= onset] or [points[0][1]]
            growth[name] = math.log10(points[-1][1]) - math.log10(before[-1])
    if len(growth) < 3:
        return None, None
    ranked = sorted(growth.items(), key=lambda kv: -kv[1])
    others = sorted(v for _, v in ranked[1:])
    median = others[len(others) // 2]
    name, top = ranked[0]
    if top >= 1.0 and top >= 2 * max(median, 0.1):
        return name, f"{name} grew {top:.1f} decades since step {onset} (the median of the others: {median:.1f})"
    return None, None
