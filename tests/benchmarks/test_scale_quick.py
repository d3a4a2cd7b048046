"""`benchmarks/scale.py --quick` runs end to end in fresh processes (for crashes and the shape of the output,
never for timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_scale_benchmark_measures_baseline_and_trace(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--quick", "--out", str(tmp_path),
                           "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "scale.json").read_text())
    assert (tmp_path / "scale.png").stat().st_size > 0
    assert [r["size"] for r in result["sizes"]] == ["quick-small", "quick-deep"]
    for row in result["sizes"]:
        for kind in ("baseline", "trace"):
            assert row[kind]["wall_s"] > 0 and row[kind]["peak_rss_mib"] > 0, (row["size"], kind)
        assert row["baseline"]["runs"][0]["finite_output"] is False  # the scaled weight really overflows
        report = row["trace"]["report"]
        assert report["status"] == "nonfinite" and report["forward_passes"] > 0
        assert report["root"] == row["faulty_weight"].rsplit(".", 1)[0], report  # where the weight was scaled
        assert row["trace"]["runs"][0]["exit_code"] == 1
        assert row["ratios"]["wall"] > 0 and row["ratios"]["rss"] > 0
        assert row["train"]["bare_s"] > 0 and row["train"]["ratio"] > 0 and row["train"]["losses_finite"]
    assert "| quick-small |" in done.stdout
    assert (ROOT / "README.md").read_text() == readme  # --quick never touches the README
