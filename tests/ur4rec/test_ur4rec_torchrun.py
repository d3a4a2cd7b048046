from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.core.torchrun import run_torchrun
from ur4rec.evaluate import evaluate
from ur4rec.model import build_model
from ur4rec.probe_data import eval_batches

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tiny_config_path: Path, tmp_path: Path) -> None:
    proc = run_torchrun(["-m", "ur4rec.train", "--config", str(tiny_config_path), "--output-dir", str(tmp_path),
                         "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    test = metrics["test"]
    n_users = metrics["data"]["users"]
    assert test["num_samples"] == n_users  # both ranks' shards summed, nothing counted twice
    assert test["num_batches"] == 2  # 30 users per rank at eval batch 32: one batch each
    # the aggregated metrics equal a single-process evaluation of the saved model
    ckpt = torch.load(tmp_path / "best.pt", weights_only=True)
    model = build_model(**ckpt["config"])
    model.load_state_dict(ckpt["model_state_dict"])
    single = evaluate(model, eval_batches(**ckpt["nanprobe"]["data"]["kwargs"]))
    for k, v in test["metrics"].items():
        assert single.metrics[k] == pytest.approx(v, abs=1e-9), k


@pytest.mark.slow
def test_torchrun_gathers_nonfinite_users_from_both_ranks(tiny_config_path: Path, tmp_path: Path) -> None:
    proc = run_torchrun(["-m", "ur4rec.train", "--config", str(tiny_config_path), "--output-dir", str(tmp_path),
                         "--no-progress", "--set", "model.attention_mask_style=original",
                         "--set", "model.sasrec_dropout=0.0"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    test = json.loads((tmp_path / "metrics.json").read_text())["test"]
    ckpt = torch.load(tmp_path / "best.pt", weights_only=True)
    kwargs = ckpt["nanprobe"]["data"]["kwargs"]
    from ur4rec.data import load_dataset

    data = load_dataset(kwargs["source"], kwargs["data_dir"], synthetic=kwargs["synthetic"])
    expected = sorted(u for u in data.users if len(data.split(u, "test")[0]) < kwargs["max_seq_len"])
    assert test["nonfinite_user_ids"] == expected
    assert {u % 2 for u in expected} == {0, 1}  # users sharded to both ranks (rank r gets rows r::2)
    assert test["nonfinite_samples"] == len(expected) and test["nonfinite_batches"] == 2
