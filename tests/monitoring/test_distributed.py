"""Two CPU processes (gloo) under DDP, NaN on rank 1 only: both ranks stop at the same step, no hang."""

from __future__ import annotations

import json
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from nanprobe.postmortem.bundle import load_bundle
from tests.core.torchrun import run_torchrun
from tests.monitoring import dist_worker
from tests.monitoring.dist_worker import FORWARD_BAD_STEP, LOSS_BAD_STEP

TIMEOUT_S = 180


def _spawn(tmp_path: Path) -> None:
    ctx = mp.start_processes(dist_worker.run, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"distributed run did not finish in {TIMEOUT_S}s (a hang)")
    except mp.ProcessExitedException as e:
        # gloo can abort a process while tearing the group down on a loaded machine ("terminate called without
        # an active exception"). Once both ranks wrote their results every checked step had finished; say so
        # loudly instead of failing on teardown, and fail if the crash came any earlier.
        if not all((tmp_path / f"result-{r}.json").exists() for r in (0, 1)):
            raise
        warnings.warn(f"a rank crashed after writing its results (process group teardown): {e}", stacklevel=2)
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()


def _torchrun(tmp_path: Path) -> None:
    try:
        proc = run_torchrun([str(Path(__file__).with_name("dist_worker.py")), str(tmp_path)], tmp_path,
                            timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun did not finish in {TIMEOUT_S}s (a hang)")
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "spawn"])
def test_two_ranks_stop_together_and_the_bundle_names_rank_1(tmp_path: Path, launcher: str) -> None:
    (_torchrun if launcher == "torchrun" else _spawn)(tmp_path)
    results = {r: json.loads((tmp_path / f"result-{r}.json").read_text()) for r in (0, 1)}

    # forward phase: raise at the same step on both ranks; only rank 1 diagnosed and wrote a bundle
    for r in (0, 1):
        fwd = results[r]["forward"]
        assert fwd["done"] == list(range(FORWARD_BAD_STEP)) and fwd["stopped_at"] == FORWARD_BAD_STEP
        assert fwd["exchanges"] == FORWARD_BAD_STEP + 1  # one all_reduce per step
        assert [f["ranks_nonfinite"] for f in fwd["failures"]] == [[1]]
        assert f"step {FORWARD_BAD_STEP}" in fwd["error"]
    assert results[0]["forward"]["failures"][0]["bundle"] is None
    assert "rank(s) [1]" in results[0]["forward"]["error"]
    bundles = sorted(p.name for p in (tmp_path / "forward").iterdir())
    assert bundles == [f"fwd-step{FORWARD_BAD_STEP}-rank1"]
    bundle = load_bundle(tmp_path / "forward" / bundles[0])
    assert bundle.report["rank"] == 1 and bundle.report["world_size"] == 2
    assert bundle.report["ranks_nonfinite"] == [1] and bundle.report["monitor"]["detected"]["samples"] == [1]
    assert bundle.env()["distributed"]["backend"] == "gloo"

    # loss phase (manual steps, dump): both ranks learn at the same step and go on to the end
    for r in (0, 1):
        loss = results[r]["loss"]
        # one exchange per mon.step(), plus one in the first forward (before the monitor learns that
        # mon.step() marks the steps, every call is a step and exchanges)
        assert loss["done"] == list(range(6)) and loss["exchanges"] == 6 + 1
        assert [(f["step"], f["ranks_nonfinite"]) for f in loss["failures"]] == [(LOSS_BAD_STEP, [1])]
    assert [p.name for p in (tmp_path / "loss").iterdir()] == [f"loss-step{LOSS_BAD_STEP}-rank1"]

    # eval phase (no_grad, uneven shards, dump): no collective per call, rank 1 alone writes its bundle
    assert results[0]["eval"] == {"calls": 2, "exchanges": 0, "failures": []}
    assert results[1]["eval"]["calls"] == 3 and results[1]["eval"]["exchanges"] == 0
    assert [(f["step"], f["ranks_nonfinite"]) for f in results[1]["eval"]["failures"]] == [(2, [1])]
    assert [p.name for p in (tmp_path / "eval").iterdir()] == ["eval-step2-rank1"]
