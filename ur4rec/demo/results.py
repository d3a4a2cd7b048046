"""Result objects of the demo's steps: plain data, ``to_dict()`` for the JSON report, rich rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from ..metrics import EvalResult

__all__ = ["DataChoice", "EvalOutcome", "Fact", "TraceOutcome", "TrainOutcome", "render_facts"]

METRICS = ("hit@5", "ndcg@5", "hit@10", "ndcg@10")


@dataclass
class DataChoice:
    source: str  # movielens | synthetic
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "detail": self.detail}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(f"data: {self.detail}")


@dataclass
class Fact:
    """One expected fact, checked by the demo itself."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def render_facts(facts: list[Fact]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(width=6)
    table.add_column()
    for f in facts:
        table.add_row(Text("ok" if f.ok else "FAILED", style="green" if f.ok else "bold red"),
                      Text(f"{f.name}: {f.detail}"))
    return table


@dataclass
class TrainOutcome:
    checkpoint: Path
    seconds: float
    config_driven: bool
    losses: list[float]  # mean training loss at each validation
    mask_style: str
    config_dropout: float
    model_dropout: float
    train_batch_size: int
    data: str
    users: int
    items: int

    @property
    def finite_loss(self) -> bool:
        return bool(self.losses) and all(torch.isfinite(torch.tensor(self.losses)).tolist())

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "seconds": round(self.seconds, 1),
                "config_driven": self.config_driven, "losses": self.losses, "finite_loss": self.finite_loss,
                "attention_mask_style": self.mask_style, "config_sasrec_dropout": self.config_dropout,
                "model_sasrec_dropout": self.model_dropout, "train_batch_size": self.train_batch_size}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        how = "build_model(config)" if self.config_driven else "constructor arguments listed by hand"
        yield Text(f"model built with {how}: attention_mask_style={self.mask_style}, sasrec_dropout in the model "
                   f"{self.model_dropout} (config {self.config_dropout}), train batch {self.train_batch_size}, "
                   f"{self.data} ({self.users} users, {self.items} items)")
        state = "finite" if self.finite_loss else "NON-FINITE"
        losses = ", ".join(f"{v:.3f}" for v in self.losses)
        yield Text(f"training loss {state} at every validation ({losses}); {self.seconds:.0f} s; "
                   f"checkpoint {self.checkpoint}")


def _key_evidence(lines: list[str]) -> list[str]:
    """The replay lines worth reading here (the bisection steps and skipped variants are in the full report)."""
    out = []
    for line in lines:
        if ": skipped" in line or line.startswith("config audit:"):
            continue
        if line.startswith("samples ") and "only ->" in line:  # the bisection's intermediate steps
            continue
        out.append(line)
    return out


def _metric_table(result: EvalResult, title: str) -> Table:
    return result.table(METRICS, title=title, first_column="test, target + sampled negatives")


@dataclass
class EvalOutcome:
    result: EvalResult
    bundles: list[Path]
    seconds: float
    batch_size: int
    padded_users: list[int]  # test users whose input is shorter than max_seq_len
    max_seq_len: int
    bundle_report: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        res = self.result.to_dict()
        res.pop("nonfinite_user_ids", None)
        verdict = (self.bundle_report or {}).get("verdict") or {}
        return {"result": res, "bundles": [str(b) for b in self.bundles], "seconds": round(self.seconds, 1),
                "batch_size": self.batch_size, "padded_users": len(self.padded_users),
                "bundle_cause": verdict.get("cause")}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        r = self.result
        yield Text(f"evaluation at batch {self.batch_size}: {r.nonfinite_batches} of {r.num_batches} batches and "
                   f"{r.nonfinite_samples} of {r.num_samples} test users have non-finite scores",
                   style="bold red" if r.nonfinite_samples else "bold green")
        if r.nonfinite_samples:
            yield Text(f"{len(self.padded_users)} test users have a history shorter than max_seq_len="
                       f"{self.max_seq_len} (left-padded input)")
        for b in self.bundles:
            cause = ((self.bundle_report or {}).get("verdict") or {}).get("cause")
            yield Text(f"nanprobe bundle: {b}" + (f" (its diagnosis: {cause})" if cause else ""))
        if r.finite:
            yield _metric_table(r, f"{r.summary_line()}")


@dataclass
class TraceOutcome:
    """The diagnosis of the original checkpoint. ``argv``: the ``nanprobe`` command line that gives the same
    report; ``exit_code``: the exit status that command has on it (1: non-finite found)."""

    report: dict[str, Any]
    exit_code: int
    seconds: float
    json_path: Path
    text_path: Path
    argv: list[str]
    batch: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # the batch of first_nonfinite

    def to_dict(self) -> dict[str, Any]:
        r = self.report
        return {"command": "nanprobe " + " ".join(self.argv), "exit_code": self.exit_code,
                "seconds": round(self.seconds, 1), "json": str(self.json_path), "text": str(self.text_path),
                "status": r.get("status"), "first_nonfinite": r.get("first_nonfinite"), "verdict": r.get("verdict"),
                "config_audit": [f for f in r.get("config_audit") or [] if f.get("reached") is False]}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        r = self.report
        first, verdict = r.get("first_nonfinite") or {}, r.get("verdict") or {}
        found = "non-finite found" if self.exit_code == 1 else "clean"
        yield Text(f"nanprobe.diagnose, as `nanprobe {' '.join(self.argv)}` runs it ({found}: exit "
                   f"{self.exit_code}; {self.seconds:.0f} s; full report: {self.text_path})", style="dim")
        yield Text(f"verdict: {verdict.get('cause')}", style="bold")
        yield Text(f"  {verdict.get('summary', '')}")
        yield Text(f"origin: {first.get('module')} ({first.get('module_type')}), op {first.get('op')}, "
                   f"{first.get('source')}, batch {first.get('batch_index')}, "
                   f"{len(first.get('samples') or [])} sample(s)")
        yield Text("evidence (what nanprobe varied -> what changed):")
        for line in _key_evidence(verdict.get("evidence") or []):
            yield Text(f"  - {line}")
        for f in r.get("config_audit") or []:
            if f.get("reached") is False:
                yield Text(f"config audit: {f.get('message')}", style="yellow")
        yield Text(f"fix: {verdict.get('fix', '')}")
