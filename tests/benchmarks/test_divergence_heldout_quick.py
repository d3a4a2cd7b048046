"""`benchmarks/divergence_heldout.py` on a few short runs: the same seed draws the same runs, every family can be
drawn, and the summary counts what the runs did (for crashes and bookkeeping, never for the rates)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from benchmarks.divergence_heldout import draw, main

FAMILIES = {"sgd", "momentum", "adam", "float16 weights", "autocast float16", "exp loss", "jump"}


def test_a_seed_draws_the_same_runs_from_every_family() -> None:
    rng, again_rng = random.Random(7), random.Random(7)
    first = [draw(rng, i, 50) for i in range(60)]
    again = [draw(again_rng, i, 50) for i in range(60)]
    assert first == again and len({r.name for r in first}) == 60
    assert {r.family for r in first} == FAMILIES
    assert all(r.momentum == 0.9 for r in first if r.family == "momentum")
    assert all(r.jump is not None and r.jump[1] > r.lr for r in first if r.family == "jump")
    assert all(not r.diverges for r in first)  # decided by the outcome, not drawn


def test_the_summary_counts_the_runs(tmp_path: Path) -> None:
    out = tmp_path / "heldout.json"
    assert main(["--runs", "4", "--steps", "30", "--seed", "11", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    runs, summary = result["runs"], result["summary"]
    assert result["seed"] == 11 and len(runs) == 4
    diverged = [r for r in runs if r["failure"] is not None]
    assert all(r["diverges"] == (r["failure"] is not None) for r in runs)
    assert summary["diverging_runs"] == len(diverged) and summary["healthy_runs"] == 4 - len(diverged)
    assert summary["healthy_steps"] == sum(r["steps"] for r in runs if r["failure"] is None)
