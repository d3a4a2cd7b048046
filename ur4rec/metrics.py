"""Ranking metrics with honest non-finite accounting.

Ranks are 0-based and pessimistic: the target's rank is the number of *other* candidates whose score is
>= the target's. A sample with any non-finite score among its (eligible) candidates is counted as
non-finite and scored as a miss (rank = number of candidates - 1, contributes 0 to every metric): it is
never skipped silently and never ranked first. Counts of valid / non-finite batches and samples and the
non-finite user ids are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

__all__ = ["KS", "EvalResult", "RankingAccumulator", "metric_names", "ranks_from_scores"]

KS: tuple[int, ...] = (5, 10, 20)


def metric_names(ks: tuple[int, ...] = KS) -> list[str]:
    return [f"hit@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr"]


def ranks_from_scores(scores: torch.Tensor, target_index: torch.Tensor | int = 0,
                      exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B, C), target column (B,) or int, exclude (B, C) bool (ignored candidates, never the target).

    Returns (rank (B,) long, nonfinite (B,) bool). Non-finite rows get the worst rank."""
    scores = scores.detach().double()
    B = scores.shape[0]
    tgt = torch.as_tensor(target_index, device=scores.device).long().expand(B)
    eligible = torch.ones_like(scores, dtype=torch.bool) if exclude is None else ~exclude
    eligible[torch.arange(B), tgt] = True
    nonfinite = (~torch.isfinite(scores) & eligible).any(dim=1)
    t = scores.gather(1, tgt[:, None])  # (B, 1)
    others = eligible.clone()
    others[torch.arange(B), tgt] = False
    rank = ((scores >= t) & others).sum(dim=1)
    worst = eligible.sum(dim=1) - 1
    return torch.where(nonfinite, worst, rank), nonfinite


@dataclass
class EvalResult:
    """Metrics over all samples (non-finite ones count as misses) plus the non-finite accounting."""

    name: str
    metrics: dict[str, float]
    num_samples: int
    num_batches: int
    nonfinite_samples: int
    nonfinite_batches: int
    nonfinite_user_ids: list[int] = field(default_factory=list)
    baseline: EvalResult | None = None

    @property
    def valid_samples(self) -> int:
        return self.num_samples - self.nonfinite_samples

    @property
    def valid_batches(self) -> int:
        return self.num_batches - self.nonfinite_batches

    @property
    def finite(self) -> bool:
        return self.nonfinite_samples == 0

    def summary_line(self) -> str:
        return (f"{self.name}: valid / non-finite batches {self.valid_batches} / {self.nonfinite_batches}, "
                f"samples {self.valid_samples} / {self.nonfinite_samples}")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name, "metrics": dict(self.metrics), "num_samples": self.num_samples,
            "num_batches": self.num_batches, "valid_samples": self.valid_samples,
            "valid_batches": self.valid_batches, "nonfinite_samples": self.nonfinite_samples,
            "nonfinite_batches": self.nonfinite_batches, "nonfinite_user_ids": list(self.nonfinite_user_ids),
        }
        if self.baseline is not None:
            d["baseline"] = self.baseline.to_dict()
        return d

    def to_frame(self) -> pd.DataFrame:
        rows = {self.name: self.metrics}
        if self.baseline is not None:
            rows[self.baseline.name] = self.baseline.metrics
        return pd.DataFrame(rows).T

    def table(self, names: Sequence[str] | None = None, *, title: str | None = None,
              first_column: str = "model") -> Any:
        """A rich table of ``names`` (default: every metric) for this result and its baseline (plain text: no
        rich markup is read from the names or the title)."""
        from rich.table import Table
        from rich.text import Text

        names = list(self.metrics) if names is None else list(names)
        table = Table(title=Text(self.summary_line() if title is None else title, style="table.title"),
                      title_justify="left")
        table.add_column(Text(first_column))
        for n in names:
            table.add_column(Text(n), justify="right")
        table.add_row(Text(self.name), *(f"{self.metrics.get(n, math.nan):.4f}" for n in names))
        if self.baseline is not None:
            table.add_row(Text(self.baseline.name),
                          *(f"{self.baseline.metrics.get(n, math.nan):.4f}" for n in names))
        return table

    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield self.table()


class RankingAccumulator:
    """Accumulates per-batch ranks; sums are kept in one float64 tensor so they all-reduce in one call."""

    def __init__(self, name: str = "model", ks: tuple[int, ...] = KS) -> None:
        self.name, self.ks = name, ks
        self.names = metric_names(ks)
        # [metric sums..., num_samples, num_batches, nonfinite_samples, nonfinite_batches]
        self.totals = torch.zeros(len(self.names) + 4, dtype=torch.float64)
        self.nonfinite_users: list[int] = []

    def update(self, scores: torch.Tensor, user_ids: torch.Tensor, target_index: torch.Tensor | int = 0,
               exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Add one batch; returns its (B,) non-finite flags."""
        rank, nonfinite = ranks_from_scores(scores, target_index, exclude)
        r = rank.double()
        vals = []
        for k in self.ks:
            vals.append(((r < k) & ~nonfinite).double().sum())
        for k in self.ks:
            vals.append(torch.where((r < k) & ~nonfinite, 1.0 / torch.log2(r + 2.0), torch.zeros_like(r)).sum())
        vals.append(torch.where(nonfinite, torch.zeros_like(r), 1.0 / (r + 1.0)).sum())
        n_bad = int(nonfinite.sum())
        vals += [torch.tensor(float(len(r))), torch.tensor(1.0), torch.tensor(float(n_bad)),
                 torch.tensor(float(n_bad > 0))]
        self.totals += torch.stack([v.double().cpu() for v in vals])
        if n_bad:
            self.nonfinite_users.extend(int(u) for u in user_ids[nonfinite.to(user_ids.device)].tolist())
        return nonfinite

    def result(self) -> EvalResult:
        t = self.totals.tolist()
        n = int(t[len(self.names)])
        metrics = {name: (t[i] / n if n else math.nan) for i, name in enumerate(self.names)}
        return EvalResult(
            name=self.name, metrics=metrics, num_samples=n, num_batches=int(t[len(self.names) + 1]),
            nonfinite_samples=int(t[len(self.names) + 2]), nonfinite_batches=int(t[len(self.names) + 3]),
            nonfinite_user_ids=sorted(set(self.nonfinite_users)),
        )
