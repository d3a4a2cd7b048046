"""FSDP2 (``fully_shard``) on 2 CPU processes (gloo), what works today: the forward checks and the ranks'
agreement (both ranks stop at the NaN step, the rank that saw it writes a bundle), with ``diagnose=False``.
What does not (gradient norms and the update ratio on DTensor shards, a diagnosis on one rank) is in the
README's table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch.distributed as dist

from nanprobe.postmortem.bundle import load_bundle
from tests.core.torchrun import run_torchrun
from tests.integrations.fsdp_worker import BAD_STEP

TIMEOUT_S = 180


@pytest.mark.slow
def test_fsdp2_ranks_stop_together_and_the_bad_rank_writes_a_bundle(tmp_path: Path) -> None:
    if not dist.is_available():
        pytest.skip("this torch has no torch.distributed")
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        pytest.skip("this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)")
    try:
        proc = run_torchrun([str(Path(__file__).with_name("fsdp_worker.py")), str(tmp_path)], tmp_path,
                            timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun did not finish in {TIMEOUT_S}s (a hang)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r: json.loads((tmp_path / f"result-{r}.json").read_text()) for r in (0, 1)}
    for result in results.values():
        assert result["type"].startswith("FSDP")
        assert result["done"] == list(range(BAD_STEP)) and result["stopped_at"] == BAD_STEP
        assert [f["ranks_nonfinite"] for f in result["failures"]] == [[1]]
    (bundle,) = (tmp_path / "bundles").iterdir()
    assert bundle.name == f"fsdp-step{BAD_STEP}-rank1"
    report = load_bundle(bundle).report
    assert report.rank == 1 and report.monitor.detected.samples == [1]
    assert "diagnose=False" in report.monitor.diagnosis_error
