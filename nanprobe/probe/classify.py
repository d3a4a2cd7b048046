"""Producer / propagated / latent: the probe's classification of processed records (a mixin).

Records arrive in completion order (children before the calls that contain them). See
:mod:`nanprobe.probe.hooks` for the rules.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from nanprobe.probe.records import CallRecord, kind_of
from nanprobe.stats import TensorStats

__all__ = ["ClassifyMixin", "inf_fraction"]


@dataclasses.dataclass
class _Step:
    first: dict[str, CallRecord] = dataclasses.field(default_factory=dict)
    producers: list[CallRecord] = dataclasses.field(default_factory=list)
    converted: bool = False
    """A call turned incoming Inf into NaN in the same rows (propagation: Inf producers are NaN sources)."""
    own_code: list[CallRecord] = dataclasses.field(default_factory=list)
    """Calls with finite inputs and non-finite outputs, in completion order: when no child produced the value,
    the innermost of them made it in its own forward code (e.g. ``torch.log`` between two child modules)."""


class ClassifyMixin:
    keep_nonfinite: int
    _order: int
    _desc: dict[int, tuple[frozenset[str], float]]
    _in_inf: dict[int, float]
    _ring: deque[CallRecord]
    _kept: list[CallRecord]
    _latent: list[CallRecord]
    _step: _Step
    _step_kinds: dict[int, frozenset[str]]
    _inputs: dict[int, CallRecord]
    _origin: CallRecord | None

    def _process(self, rec: CallRecord) -> None:
        rec.order = self._order
        self._order += 1
        desc, desc_inf = self._desc.pop(rec.index, (frozenset(), 0.0))
        in_inf = self._in_inf.pop(rec.index, 0.0)
        out = rec.out_kinds
        new = out - rec.in_kinds - desc
        if "nan" in new and "inf" in (rec.in_kinds | desc):
            # Inf came in and NaN came out. A call that passes Inf on (log(0) -> Linear -> NaN) leaves at
            # least as large a share of its output non-finite as the share of Inf it got; a call that
            # handles Inf on purpose (softmax over -inf-masked scores) turns most of them finite, and the
            # NaN it still makes (a row with nothing left) is its own.
            out_frac = max((s.nonfinite / s.numel for s in rec.outputs.values() if s.numel), default=0.0)
            if not out_frac < max(in_inf, desc_inf):
                new = new - {"nan"}
                self._step.converted = True
        rec.produced = new
        rec.kind = kind_of(rec.produced) or kind_of(out)
        if rec.parent is not None and (out or desc):
            old_kinds, old_inf = self._desc.get(rec.parent, (frozenset(), 0.0))
            own_inf = max((inf_fraction(s) for s in rec.outputs.values()), default=0.0)
            self._desc[rec.parent] = (old_kinds | out | desc, max(old_inf, own_inf, desc_inf))
        self._ring.append(rec)
        if out and len(self._kept) < self.keep_nonfinite:
            self._kept.append(rec)
        if out and not rec.in_kinds and rec.params_finite and len(self._step.own_code) < self.keep_nonfinite:
            self._step.own_code.append(rec)
        if rec.produced:
            for k in rec.produced:
                self._step.first.setdefault(k, rec)
            if len(self._step.producers) < self.keep_nonfinite:
                self._step.producers.append(rec)
        if rec.parent is None:
            self._end_step(rec, out)

    def _end_step(self, top: CallRecord, reached: frozenset[str]) -> None:
        step, self._step = self._step, _Step()
        self._desc.clear()
        self._in_inf.clear()
        inp = self._inputs.pop(top.step, None)
        if "nan" in reached and step.converted:
            reached = reached | {"inf"}
        if reached:
            self._step_kinds[top.step] = reached
            if self._origin is None:
                if inp is not None and inp.out_kinds & reached:
                    self._origin = inp
                else:
                    firsts = [step.first[k] for k in reached if k in step.first]
                    if not firsts:  # made by a module's own code and passed through a child on its way out
                        own = [r for r in step.own_code if r.out_kinds & reached]
                        if own:
                            own[0].produced = own[0].out_kinds & reached
                            own[0].kind = kind_of(own[0].produced)
                            firsts = [own[0]]
                    self._origin = min(firsts, key=lambda r: r.order) if firsts else None
        for rec in step.producers:
            if not rec.produced & reached and len(self._latent) < self.keep_nonfinite:
                self._latent.append(rec)


def inf_fraction(s: TensorStats) -> float:
    return (s.posinf + s.neginf) / s.numel if s.numel else 0.0
