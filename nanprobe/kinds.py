"""The one vocabulary of non-finite value kinds, shared by the probe, the op-level localizer and the checks.

A :class:`Kind` is a set of flags: ``NAN``, ``POSINF``, ``NEGINF``. The sign of an infinity matters where masks
are concerned (an additive attention mask is ``-inf`` on purpose); reports only say ``"nan"`` or ``"inf"``
(:func:`report_kind`), and the probe, which follows kinds through module calls, works on the signless
projection :meth:`Kind.coarse` (``POSINF``/``NEGINF`` both become ``INF``).
"""

from __future__ import annotations

import enum
import math

import torch

__all__ = ["FINITE", "INF", "NAN", "NEGINF", "POSINF", "Kind", "nonfinite_tensors", "report_kind", "sum_kinds",
           "tensor_kinds"]


class Kind(enum.IntFlag):
    """Which kinds of non-finite values occur in a tensor (or flow through a call)."""

    FINITE = 0
    NAN = 1
    POSINF = 2
    NEGINF = 4
    INF = POSINF | NEGINF

    def coarse(self) -> Kind:
        """``NAN`` and/or ``INF`` (both infinities as ``INF``), for following values without their sign."""
        out = self & Kind.NAN
        if self & Kind.INF:
            out |= Kind.INF
        return Kind(out)


FINITE = Kind.FINITE
NAN = Kind.NAN
POSINF = Kind.POSINF
NEGINF = Kind.NEGINF
INF = Kind.INF


def report_kind(kinds: Kind) -> str | None:
    """What a report says: ``"nan"`` when any NaN, else ``"inf"`` when any Inf, else ``None``."""
    if kinds & Kind.NAN:
        return "nan"
    if kinds & Kind.INF:
        return "inf"
    return None


def tensor_kinds(t: torch.Tensor) -> Kind:
    """The kinds of non-finite values in a floating or complex tensor (complex by magnitude). One ``sum`` when
    every value is finite (a NaN or an Inf anywhere makes it non-finite; a sum that merely overflows falls
    through to the exact count); nested tensors are read through their values."""
    x = t.detach()
    try:
        if x.is_nested:
            x = x.values() if x.layout == torch.jagged else torch.cat([c.reshape(-1) for c in x.unbind()])
        if not (x.dtype.is_floating_point or x.dtype.is_complex) or x.numel() == 0:
            return FINITE
        if x.is_complex():
            x = x.abs()
        total = x.sum().item()
        if total - total == 0.0:  # finite (NaN - NaN and inf - inf are NaN)
            return FINITE
        lo, hi = x.amin().item(), x.amax().item()
    except (RuntimeError, NotImplementedError, TypeError):  # fake, meta or otherwise unreadable tensors
        return FINITE
    if lo == lo and hi == hi:  # no NaN: the extremes say everything
        found = FINITE
        if hi == float("inf"):
            found |= POSINF
        if lo == float("-inf"):
            found |= NEGINF
        return Kind(found)
    found = NAN  # amin/amax propagate NaN: look for infinities separately (rare path)
    if bool((x == float("inf")).any()):
        found |= POSINF
    if bool((x == float("-inf")).any()):
        found |= NEGINF
    return Kind(found)


def sum_kinds(t: torch.Tensor) -> Kind:
    """The kinds of a tensor's non-finite values as its sum tells them, in one pass: ``NAN`` for a NaN sum
    (NaN present, or infinities of both signs), one infinity for an infinite sum (which a finite sum that
    overflows also gives). For values already known to carry NaN/Inf on (a propagating op's output), where
    the exact count (:func:`tensor_kinds`) costs four more passes."""
    x = t.detach()
    try:
        if x.is_nested or x.numel() == 0 or not (x.dtype.is_floating_point or x.dtype.is_complex):
            return tensor_kinds(x)
        total = (x.abs() if x.is_complex() else x).sum().item()
    except (RuntimeError, NotImplementedError, TypeError):
        return FINITE
    if total != total:
        return NAN
    if total == float("inf"):
        return POSINF
    if total == float("-inf"):
        return NEGINF
    return FINITE


def nonfinite_tensors(named: list[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating/complex tensors (e.g. a model's parameters and buffers) holding NaN/Inf: one sum
    per tensor (no temporary; a NaN or Inf makes it non-finite), one host read for them all, and an exact
    check only of the suspects (a finite sum can overflow)."""
    candidates = [(n, t.detach()) for n, t in named if (t.is_floating_point() or t.is_complex()) and t.numel()]
    if not candidates:
        return []
    sums = torch.stack([(t.abs() if t.is_complex() else t).sum(dtype=torch.float32).cpu() for _, t in candidates])
    suspects = [(n, t) for (n, t), s in zip(candidates, sums.tolist()) if not math.isfinite(s)]
    return [n for n, t in suspects if not bool(torch.isfinite(t).all())]
