"""examples/training_blowups runs as documented: every checked fact holds, and it says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_training_blowups_example_holds_its_facts(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples/training_blowups/two_blowups.py"), "--workdir",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    held = [line for line in done.stdout.splitlines() if line.startswith("held: ")]
    assert len(held) == 6 and "FAILED" not in done.stdout
    assert "history: step 30's batch: row 5 of its input batch.args[0] has |max|" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt-row", "lr-typo"]  # the clipped run wrote none
