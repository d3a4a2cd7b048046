"""Which samples of a failing batch make it fail: verify the candidate rows (and that the others are finite),
then group-test: split every failing group in two and keep the halves that still fail on their own, while
the pass budget lasts. What is left is the smallest set the replays showed to reproduce the failure alone."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nanprobe.batches import batch_size, select_samples
from nanprobe.execution import Execution, OutOfTime
from nanprobe.report import ReplayEntry

__all__ = ["SampleSearch", "concat_batches", "find_samples"]

Run = Callable[[Any, str, dict[str, Any]], Execution]


@dataclass
class SampleSearch:
    """Outcome of the sample search."""

    failing: list[int] = field(default_factory=list)  # samples that make the batch fail
    minimal: list[int] = field(default_factory=list)  # smallest set shown to fail on its own
    independent: bool | None = None  # do the failing samples fail regardless of the rest of the batch?
    composition: bool = False  # the failure needs other samples of the batch (batch statistics)
    alone: dict[int, bool] = field(default_factory=dict)  # sample -> fails alone (a batch of one), when tried
    together: list[list[int]] = field(default_factory=list)  # groups that fail, though neither half does
    evidence: list[str] = field(default_factory=list)
    replay: list[ReplayEntry] = field(default_factory=list)


def _fmt(rows: Sequence[int]) -> str:
    rows = list(rows)
    return ", ".join(map(str, rows[:8])) + (f", ... ({len(rows)} samples)" if len(rows) > 8 else "")


class _Stopped(Exception):
    pass


def find_samples(run: Run, batch: Any, candidates: Sequence[int], *, budget: int, kind: str,
                 stop: Callable[[], bool] | None = None) -> SampleSearch:
    """``run(sub_batch, label, changes)`` executes one counted pass. At most ``budget`` passes are spent:
    about 2 when the candidate rows are right, 2*log2(B) when the search has to halve. ``stop()`` returning
    True (a time budget), or a run stopped by its deadline, ends the search where it is."""
    out = SampleSearch()
    try:
        return _search(run, batch, candidates, budget=budget, kind=kind, stop=stop, out=out)
    except _Stopped:
        out.failing = out.failing or sorted(set(candidates))
        out.minimal = []
        return out


def _search(run: Run, batch: Any, candidates: Sequence[int], *, budget: int, kind: str,
            stop: Callable[[], bool] | None, out: SampleSearch) -> SampleSearch:
    if stop is not None and stop():
        budget = 0
    size = batch_size(batch) or 1
    everyone = list(range(size))
    cands = sorted(c for c in set(candidates) if 0 <= c < size)
    spent = 0

    def test(rows: list[int], label: str) -> bool:
        nonlocal spent
        spent += 1
        res = run(select_samples(batch, rows), label, {"samples": rows})
        if isinstance(res.error, OutOfTime):  # no answer: end the search where it is
            raise _Stopped
        fails = res.nonfinite
        seen = [rows[i] for i in res.samples if i < len(rows)]
        error = f"{type(res.error).__name__}: {res.error}" if res.error else None
        out.replay.append(ReplayEntry(label, {"samples": rows}, fails, seen, error))
        word = f"still {'NaN' if kind == 'nan' else 'Inf'}" if fails else "finite"
        out.evidence.append(f"{label} -> {word}")
        return fails

    if size == 1:
        out.failing = out.minimal = [0]
        return out
    known: list[int] | None = None
    if cands and len(cands) < size and budget >= 1:
        if test(cands, f"samples {_fmt(cands)} only"):
            out.failing = cands
            known = cands
            rest = [i for i in everyone if i not in set(cands)]
            if budget - spent >= 1 and rest:
                rest_fails = test(rest, "the other samples only")
                out.independent = not rest_fails
        else:
            out.composition = True
            out.failing = cands
            return out
    if known is None:
        known = everyone
        if not out.failing:
            out.failing = everyone
        # every row fails: the first and the last row alone tell whether the rows matter at all (two small
        # passes) before any halving
        ends = [everyone[0], everyone[-1]]
        if budget - spent >= 2 and all(test([i], f"sample {i} only") for i in ends):
            for i in ends:
                out.alone[i] = True
            out.minimal = everyone
            out.independent = True
            out.evidence.append("the first and the last sample each fail on their own: the failure does not "
                                "depend on particular rows")
            return out
    # Split failing groups; keep each half that fails on its own (both halves cost a pass each).
    groups, settled = [known], []
    while groups and budget - spent >= 2 and not (stop is not None and stop()):
        group = groups.pop(0)
        if len(group) == 1:
            settled.append(group)
            continue
        half = len(group) // 2
        left, right = group[:half], group[half:]
        left_fails = test(left, f"samples {_fmt(left)} only")
        right_fails = test(right, f"samples {_fmt(right)} only")
        for part, fails in ((left, left_fails), (right, right_fails)):
            if len(part) == 1:
                out.alone[part[0]] = fails
            if fails:
                groups.append(part)
        if not left_fails and not right_fails:
            out.together.append(group)
            settled.append(group)
    out.minimal = sorted({i for g in settled + groups for i in g})
    out.composition = out.composition or (known == everyone and [known] == out.together)
    return out


def concat_batches(a: Any, b: Any) -> Any:
    """Rows of ``b`` appended to ``a`` (same structure; tensors with the batch dim are concatenated)."""
    na, nb = batch_size(a), batch_size(b)

    def join(x: Any, y: Any) -> Any:
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.dim() > 0 and y.dim() > 0 and x.shape[0] == na and y.shape[0] == nb and x.shape[1:] == y.shape[1:]:
                return torch.cat([x, y.to(device=x.device, dtype=x.dtype)])
            return x
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            return type(x)({k: join(v, y[k]) if k in y else v for k, v in x.items()})  # type: ignore[call-arg]
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return type(x)(*(join(u, v) for u, v in zip(x, y)))
        if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)) and len(x) == len(y):
            return type(x)(join(u, v) for u, v in zip(x, y))
        return x

    return join(a, b)
