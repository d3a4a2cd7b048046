"""`benchmarks/overhead.py --quick` runs end to end (for crashes and shape of the output, never for timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.overhead import main
from benchmarks.report import markdown_overhead


@pytest.mark.slow
def test_quick_benchmark_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    assert main(["--quick", "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"machine", "overhead", "scaling", "diagnosis", "memory"} <= set(result)
    cells = {(r["workload"], r["phase"], r["variant"]) for r in result["overhead"]}
    for workload in ("ur4rec", "transformer_encoder", "gpt_decoder"):
        for phase in ("eval", "train"):
            assert {(workload, phase, v) for v in ("bare", "nanprobe sentinel", "nanprobe probe")} <= cells
        assert (workload, "train", "detect_anomaly") in cells
        assert (workload, "train", "nanprobe sentinel + history") in cells
    assert all(r["ratio"] > 0 for r in result["overhead"])
    assert all(r["ratio"] == 1.0 for r in result["overhead"] if r["variant"] == "bare")
    for row in result["diagnosis"]:  # the budget is a target of the issue: a failing batch of B samples
        assert row["cause"] == "fully_masked_attention"
        assert row["forward_passes"] <= row["budget"]
    memory = result["memory"]
    assert memory["steps"] == 500 and len(memory["marks"]) >= 10 and len(memory["probe_marks"]) >= 10
    assert memory["probe_calls"] % 500 == 0 and memory["probe_calls"] >= 500 * 20  # every module call, every step
    assert memory["probe_records_kept"] <= 256 + 32  # the ring plus the always-kept non-finite records
    table = markdown_overhead(result)
    assert table.count("\n") == 1 + 6 and "| ur4rec | eval |" in table
    header = table.splitlines()[0].split(" | ")
    assert header[3:5] == ["nanprobe sentinel", "nanprobe sentinel + history"], header
