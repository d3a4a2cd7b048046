"""``python -m nanprobe`` is the ``nanprobe`` script: same commands, same exit statuses, same one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nanprobe import __version__

ROOT = Path(__file__).resolve().parents[2]


def _python_m(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "nanprobe", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_python_m_nanprobe_runs_the_cli(tmp_path: Path) -> None:
    version = _python_m("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"nanprobe {__version__}"
    missing = _python_m("trace", str(tmp_path / "nope.pt"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("nanprobe: error: ") and "does not exist" in missing.stderr
    assert missing.stdout == "" and "Traceback" not in missing.stderr
