"""``accelerate launch`` of 2 CPU processes (gloo) around an ``accelerator.prepare``d model, a NaN on rank 1 at a
known step: both processes stop at that step, rank 1 writes the one bundle, no hang."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("accelerate")

from nanprobe.postmortem.bundle import load_bundle
from tests.integrations.accelerate_worker import BAD_STEP

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path) -> subprocess.CompletedProcess[str]:
    """``accelerate launch --multi_gpu --num_processes 2``: on a machine without GPUs accelerate starts the two
    processes with torchrun and they train on the CPU over gloo (``--cpu`` alone starts one process). One
    retry for a launcher-level flake (a lost rendezvous on a loaded machine), as the torchrun tests do."""
    cli = Path(sys.executable).with_name("accelerate")
    if not cli.exists():
        found = shutil.which("accelerate")
        if found is None:
            pytest.skip("the accelerate command is not installed")
        cli = Path(found)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc: subprocess.CompletedProcess[str] | None = None
    for attempt in range(2):
        if attempt:
            warnings.warn(f"accelerate launch failed (rc={proc.returncode}), retrying once:\n{proc.stderr[-2000:]}",
                          stacklevel=2)
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
        cmd = [str(cli), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               str(ROOT / "tests" / "integrations" / "accelerate_worker.py"), str(out)]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"accelerate launch did not finish in {TIMEOUT_S}s (a hang)")
        if proc.returncode == 0:
            break
    assert proc is not None and proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_accelerate_processes_stop_together_at_the_nan_step(tmp_path: Path) -> None:
    _launch(tmp_path)
    results = {r: json.loads((tmp_path / f"result-{r}.json").read_text()) for r in (0, 1)}
    for result in results.values():
        assert result["world_size"] == 2 and result["wrapped"] == "DistributedDataParallel"
        assert result["done"] == list(range(BAD_STEP)) and result["stopped_at"] == BAD_STEP
        assert result["exchanges"] == BAD_STEP + 1  # one all_reduce per step
        assert [f["ranks_nonfinite"] for f in result["failures"]] == [[1]]
        assert result["optimizer"] == "SGD" and result["lr"] == [0.01] * BAD_STEP  # the real optimizer's
        assert f"step {BAD_STEP}" in result["error"]
    assert results[0]["failures"][0]["bundle"] is None and "rank(s) [1]" in results[0]["error"]
    (bundle,) = (tmp_path / "bundles").iterdir()
    assert bundle.name == f"acc-step{BAD_STEP}-rank1"
    report = load_bundle(bundle).report
    assert (report.rank, report.world_size, report.ranks_nonfinite) == (1, 2, [1])
    assert report.first_nonfinite.samples == [1] and report.verdict.cause == "numerical_domain"
