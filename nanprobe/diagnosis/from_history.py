"""The verdict from a run's history alone, when the failing step does not re-create from its saved batch (the
loss or the backward ran through code outside the model, or the weights were already on their way out).

Two explanations compete, weighed like any other evidence (:mod:`nanprobe.diagnosis.evidence`):

* ``training_divergence``: values grew exponentially over many steps until they overflowed
  (:func:`nanprobe.diagnosis.dynamics.analyze`);
* ``dtype_overflow`` of the backward: the model computes in float16 with no GradScaler, and the gradients'
  largest |value| (``grad_absmax``, which the monitor records in that case) had come within reach of
  float16's max before the backward that overflowed. Their growth need not be exponential: a large loss
  (unnormalised regression targets, a summed loss) is enough.

:func:`parameters_verdict` is the verdict on parameters an optimizer step broke before any output was
non-finite (the monitor's "parameters" failure): the ordinary candidates, given the step the history dates
and what the optimizer's step does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nanprobe.diagnosis.dynamics import analyze, batch_overflow, broken_by_step, series
from nanprobe.diagnosis.evidence import MEASURED, OP_FACT, Candidate, choose
from nanprobe.diagnosis.optimizer import nonfinite_state, optimizer_findings
from nanprobe.diagnosis.verdict import Facts, decide, divergence_candidate, divergence_root
from nanprobe.report import Root, Verdict

__all__ = ["NEAR", "history_verdict", "parameters_verdict"]

NEAR = 0.1
"""A gradient |max| at least this share of the dtype's max counts as within reach of it (the monitor's early
warning uses the same share by default)."""


def history_verdict(history: Sequence[Mapping[str, Any]], layer_history: Sequence[Mapping[str, Any]] = (),
                    param_history: Sequence[Mapping[str, Any]] = (), *, phase: str | None = None,
                    kind: str = "inf", dtype: str | None = None, note: str | None = None) -> Verdict | None:
    """The best-supported explanation the history gives for a failure that did not reproduce, or None.
    ``dtype``: what the model computed in (its outputs' dtype, e.g. ``"float16"`` under autocast)."""
    divergence = analyze(history, layer_history, param_history) if history else None
    facts = Facts(kind=kind, phase=phase or "forward", divergence=divergence, dtype=dtype)
    gradients, gradient_root = _gradient_range(history, param_history, phase, dtype)
    batch, batch_root = _batch_overflow(history, phase)
    candidates = [c for c in (divergence_candidate(facts), gradients, batch) if c.support]
    if not candidates:
        return None
    winner, rejected = choose(candidates)
    evidence = [f"for {winner.cause}: {text}" for _, text in sorted(winner.support, key=lambda p: -p[0])]
    evidence += rejected + ([note] if note else [])
    root = (divergence_root(divergence) if winner.cause == "training_divergence" and divergence
            else batch_root if winner is batch else gradient_root)
    return Verdict(cause=winner.cause, summary=winner.summary, evidence=evidence, fix=winner.fix,  # type: ignore[arg-type]
                   root=root)


def parameters_verdict(history: Sequence[Mapping[str, Any]], bad: Sequence[str], *, kind: str = "nan",
                       model: nn.Module | None = None, optimizer: Any | None = None,
                       note: str | None = None) -> Verdict:
    """The verdict on parameters an optimizer step made non-finite, seen before any output was (the monitor's
    "parameters" failure): which step wrote them (the history's update ratio), what the optimizer's step does
    for their dtype, and whether its state is broken too; the same candidates as any diagnosis weigh it."""
    facts = Facts(kind=kind, bad_params=list(bad), broken=broken_by_step(history))
    if optimizer is not None and model is not None:
        facts.optimizer = optimizer_findings(optimizer, model, bad)
        facts.optimizer_state = nonfinite_state(optimizer, model, bad)
    verdict = decide(facts)
    if note:
        verdict.evidence.append(note)
    return verdict


def _batch_overflow(history: Sequence[Mapping[str, Any]], phase: str | None) -> tuple[Candidate, Root | None]:
    """The failing step's own batch raised its values by orders of magnitude at once after healthy steps
    (:func:`nanprobe.diagnosis.dynamics.batch_overflow`): those values overflowed, the weights did not."""
    c = Candidate("dtype_overflow")
    spike = batch_overflow(history)
    if spike is None:
        return c, None
    where = {"loss": "the loss computed from them", "backward": "the backward"}.get(phase or "", "the outputs")
    c.add(MEASURED, f"{spike.describe()}; in that same step {where} overflowed")
    if spike.outlier is not None:
        c.add(MEASURED, str(spike.row()))
    c.summary = (f"one batch's values overflowed: {spike.describe()}, and {where} exceeded the dtype's range in that "
                 "step; the weights were not the cause.")
    c.fix = (f"{spike.batch_fix()}; normalise or clamp the inputs so that one record cannot reach the dtype's "
             "limits")
    evidence = "; ".join(t for t in (spike.describe(), spike.row()) if t)
    return c, Root(step=spike.step, evidence=evidence)


def _gradient_range(history: Sequence[Mapping[str, Any]], param_history: Sequence[Mapping[str, Any]],
                    phase: str | None, dtype: str | None) -> tuple[Candidate, Root | None]:
    """A backward that overflowed a narrow dtype, and where to fix it (the step from which the gradients
    were within reach of the max, and the parameter whose gradient was largest)."""
    c = Candidate("dtype_overflow")
    peaks = series(history, "grad_absmax")
    if phase not in ("backward", "loss") or not peaks or dtype is None or not hasattr(torch, dtype):
        return c, None
    limit = float(torch.finfo(getattr(torch, dtype)).max)
    step, peak = peaks[-1]
    if peak < NEAR * limit:
        return c, None
    param = next((row.get("largest_grad") for row in reversed(param_history) if row.get("step") == step), None)
    of = f" (of {param})" if isinstance(param, str) else ""
    first = next(s for s, v in peaks if v >= NEAR * limit)
    c.add(MEASURED, f"the gradients' largest |value|{of} was {peak:.3g} at step {step}, {peak / limit:.0%} of "
                    f"{dtype}'s max {limit:.6g}, and above {NEAR:.0%} of it since step {first}; the next backward "
                    "overflowed")
    c.add(OP_FACT, f"the model computes in {dtype} and no GradScaler rescales its backward")
    loss = series(history, "loss")
    large = f"the loss was {loss[-1][1]:.3g}: " if loss else ""
    c.summary = (f"the backward overflowed {dtype}: the gradients' |max| had reached {peak:.3g} by step {step} "
                 f"({peak / limit:.0%} of {dtype}'s max {limit:.6g}) with no GradScaler to rescale them.")
    c.fix = (f"keep the backward within {dtype}'s range: use torch.amp.GradScaler (it lowers its scale and skips "
             f"the step when gradients overflow), or autocast to bfloat16, or make the loss smaller ({large}"
             "normalise regression targets, average instead of sum)")
    return c, Root(step=first, parameter=param if isinstance(param, str) else None,
                   evidence=f"gradient |max| {peak:.3g} at step {step} ({peak / limit:.0%} of {dtype}'s max)")
