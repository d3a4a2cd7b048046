"""Launching a 2-process torchrun (gloo, CPU) from a test, with one retry for launcher-level flakes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_torchrun(args: list[str], out_dir: Path, *, timeout: float = 240, attempts: int = 2
                 ) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=2 ARGS``; ``out_dir`` is emptied before a retry.

    A loaded 2-core machine occasionally loses a gloo rendezvous or aborts in process-group teardown. A
    failed first attempt is reported as a warning with its stderr, and the run is repeated once; a second
    failure fails the test. A hang is never retried: it fails at ``timeout``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    proc: subprocess.CompletedProcess[str] | None = None
    for attempt in range(attempts):
        if attempt:
            warnings.warn(f"torchrun attempt {attempt} failed (rc={proc.returncode}), retrying once:\n"
                          f"{proc.stderr[-2000:]}", stacklevel=2)
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if proc.returncode == 0:
            break
    assert proc is not None
    return proc
