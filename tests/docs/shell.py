"""Running a README shell command the way a user would: in a folder of their own, ``nanprobe`` and ``python`` on
the PATH (this checkout's code), output piped (not a terminal) at a chosen width."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.docs.readme import Command

__all__ = ["ROOT", "run_command", "shell_env"]

ROOT = Path(__file__).resolve().parents[2]


def shell_env(folder: Path, *, columns: int = 80) -> dict[str, str]:
    """An environment whose ``nanprobe`` (what the console script runs) and ``python`` run this checkout with
    this interpreter."""
    bin_dir = folder / ".bin"
    bin_dir.mkdir(exist_ok=True)
    script = "import sys; from nanprobe.cli.main import entry; sys.argv[0] = 'nanprobe'; entry()"
    for name, target in (("nanprobe", f'"{sys.executable}" -c "{script}"'), ("python", f'"{sys.executable}"')):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "PYTEST_ADDOPTS")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", COLUMNS=str(columns),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p))
    return env


def run_command(command: Command, folder: Path, env: dict[str, str], *, timeout: float = 180
                ) -> subprocess.CompletedProcess[str]:
    """One command in ``bash``, stdout and stderr piped, stdin closed."""
    return subprocess.run(["bash", "-c", command.line], cwd=folder, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, check=False)
