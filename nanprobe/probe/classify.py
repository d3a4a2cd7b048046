"""Producer / propagated / latent: the probe's classification of processed records.

Records arrive in completion order (children before the calls that contain them). See
:mod:`nanprobe.probe.hooks` for the rules. The :class:`Classifier` owns everything it needs to classify: the
ring of kept records, the current step's producers and what each call's descendants emitted.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from nanprobe.kinds import FINITE, INF, NAN, Kind, report_kind
from nanprobe.probe.records import CallRecord

__all__ = ["Classifier"]


@dataclasses.dataclass
class _Step:
    first: dict[Kind, CallRecord] = dataclasses.field(default_factory=dict)
    producers: list[CallRecord] = dataclasses.field(default_factory=list)
    converted: bool = False
    """A call turned incoming Inf into NaN in the same rows (propagation: Inf producers are NaN sources)."""
    own_code: list[CallRecord] = dataclasses.field(default_factory=list)
    """Calls with finite inputs and non-finite outputs, in completion order: when no child produced the value,
    the innermost of them made it in its own forward code (e.g. ``torch.log`` between two child modules)."""


class Classifier:
    """Classifies records as they complete and keeps a bounded set of them: the last ``ring_size``, the first
    ``keep_nonfinite`` non-finite ones, the origin(s) and the first latent producers."""

    def __init__(self, *, ring_size: int, keep_nonfinite: int) -> None:
        self.keep_nonfinite = keep_nonfinite
        self.ring: deque[CallRecord] = deque(maxlen=ring_size)
        self.kept: list[CallRecord] = []
        self.latent: list[CallRecord] = []
        self.origin: CallRecord | None = None
        self.backward_origin: CallRecord | None = None
        self.backward_nonfinite = False
        self.step_kinds: dict[int, Kind] = {}
        """step -> the kinds that reached the output of that step's top-level call."""
        self._order = 0
        self._step = _Step()
        self._desc: dict[int, tuple[Kind, float]] = {}
        self._in_inf: dict[int, float] = {}
        self._inputs: dict[int, CallRecord] = {}

    # -- what the hooks tell it ----------------------------------------------------------------------
    def note_input(self, step: int, record: CallRecord) -> None:
        """The synthetic ``<input>`` record of a step whose batch already carried NaN/Inf."""
        self._inputs[step] = record

    def note_inf_fraction(self, index: int, fraction: float) -> None:
        """The largest share of Inf values among call ``index``'s inputs."""
        if fraction:
            self._in_inf[index] = max(fraction, self._in_inf.get(index, 0.0))

    def process(self, rec: CallRecord) -> None:
        """Classify a completed forward call."""
        rec.order = self._next_order()
        desc, desc_inf = self._desc.pop(rec.index, (FINITE, 0.0))
        in_inf = self._in_inf.pop(rec.index, 0.0)
        out = rec.out_kinds
        new = Kind(out & ~rec.in_kinds & ~desc)
        if new & NAN and (rec.in_kinds | desc) & INF:
            # Inf came in and NaN came out. A call that passes Inf on (log(0) -> Linear -> NaN) leaves at
            # least as large a share of its output non-finite as the share of Inf it got; a call that
            # handles Inf on purpose (softmax over -inf-masked scores) turns most of them finite, and the
            # NaN it still makes (a row with nothing left) is its own.
            out_frac = max((s.nonfinite / s.numel for s in rec.outputs.values() if s.numel), default=0.0)
            if not out_frac < max(in_inf, desc_inf):
                new = Kind(new & ~NAN)
                self._step.converted = True
        rec.produced = new
        rec.kind = report_kind(rec.produced) or report_kind(out)
        if rec.parent is not None and (out or desc):
            old_kinds, old_inf = self._desc.get(rec.parent, (FINITE, 0.0))
            own_inf = max((s.inf_fraction for s in rec.outputs.values()), default=0.0)
            self._desc[rec.parent] = (Kind(old_kinds | out | desc), max(old_inf, own_inf, desc_inf))
        self.ring.append(rec)
        if out and len(self.kept) < self.keep_nonfinite:
            self.kept.append(rec)
        if out and not rec.in_kinds and rec.params_finite and len(self._step.own_code) < self.keep_nonfinite:
            self._step.own_code.append(rec)
        if rec.produced:
            for k in (NAN, INF):
                if rec.produced & k:
                    self._step.first.setdefault(k, rec)
            if len(self._step.producers) < self.keep_nonfinite:
                self._step.producers.append(rec)
        if rec.parent is None:
            self._end_step(rec, out)

    def process_backward(self, rec: CallRecord) -> None:
        """Classify a backward record: the first that emitted a non-finite gradient from a finite one it
        received is the backward origin."""
        rec.order = self._next_order()
        out = rec.out_kinds
        rec.produced = Kind(out & ~rec.in_kinds)
        rec.kind = report_kind(rec.produced) or report_kind(out)
        self.ring.append(rec)
        if out:
            self.backward_nonfinite = True
            if len(self.kept) < self.keep_nonfinite:
                self.kept.append(rec)
            if self.backward_origin is None and rec.produced:
                self.backward_origin = rec

    # -- internals -----------------------------------------------------------------------------------
    def _next_order(self) -> int:
        order = self._order
        self._order += 1
        return order

    def _end_step(self, top: CallRecord, reached: Kind) -> None:
        step, self._step = self._step, _Step()
        self._desc.clear()
        self._in_inf.clear()
        inp = self._inputs.pop(top.step, None)
        if reached & NAN and step.converted:
            reached = Kind(reached | INF)
        if reached:
            self.step_kinds[top.step] = reached
            if self.origin is None:
                if inp is not None and inp.out_kinds & reached:
                    self.origin = inp
                else:
                    firsts = [step.first[k] for k in (NAN, INF) if reached & k and k in step.first]
                    if not firsts:  # made by a module's own code and passed through a child on its way out
                        own = [r for r in step.own_code if r.out_kinds & reached]
                        if own:
                            own[0].produced = Kind(own[0].out_kinds & reached)
                            own[0].kind = report_kind(own[0].produced)
                            firsts = [own[0]]
                    self.origin = min(firsts, key=lambda r: r.order) if firsts else None
        for rec in step.producers:
            if not rec.produced & reached and len(self.latent) < self.keep_nonfinite:
                self.latent.append(rec)
