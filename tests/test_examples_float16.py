"""examples/float16_training runs as documented: every checked fact holds, and it says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_float16_training_example_holds_its_facts(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples/float16_training/three_mistakes.py"), "--workdir",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    held = [line for line in done.stdout.splitlines() if line.startswith("held: ")]
    assert len(held) == 5 and "FAILED" not in done.stdout
    assert "(grad_absmax)" in done.stdout and "(optimizer)" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["autocast-no-scaler", "half-adam"]  # one bundle folder each
