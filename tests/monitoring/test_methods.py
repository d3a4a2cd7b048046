"""A model trained through a method (not ``forward``): watched with ``methods=``, replayed through it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from nanprobe.cli.main import main
from nanprobe.errors import NonFiniteError
from nanprobe.monitoring import monitor
from tests.monitoring.models import FACTORY_SCORER, make_scorer


def test_a_method_call_is_a_step_and_its_nan_is_caught_and_replayed(tmp_path: Path) -> None:
    model = make_scorer()
    x = torch.rand(3, 4) + 0.1
    bad = x.clone()
    bad[1] = 0.0
    with pytest.raises(NonFiniteError, match="step 2"), monitor(
            model, out_dir=tmp_path, run_name="s", methods=("train_logits",), factory=FACTORY_SCORER,
            config={}) as mon:
        model.train_logits(x).sum().backward()
        with torch.no_grad():
            model.eval()(x)  # an eval call through forward: a step too
        model.train()
        model.train_logits(bad, scale=2.0)
    assert mon.calls == 3  # the nested self(x) inside train_logits is not a step of its own
    assert "train_logits" not in model.__dict__  # the wrapper is gone after exit
    report = mon.failures[0].report
    assert report["monitor"]["call"]["method"] == "train_logits"
    assert report["monitor"]["detected"]["samples"] == [1]
    assert report["first_nonfinite"]["module"] == "norm"
    batch = torch.load(tmp_path / "s-step2" / "batch.pt", weights_only=True)[0]
    assert torch.equal(batch["args"][0], bad) and batch["kwargs"] == {"scale": 2.0}

    out, err = io.StringIO(), io.StringIO()
    code = main(["replay", str(tmp_path / "s-step2"), "--json", str(tmp_path / "r.json"), "--no-color"],
                stdout=out, stderr=err)
    assert code == 1, err.getvalue()
    assert "train_logits" in err.getvalue()
    assert json.loads((tmp_path / "r.json").read_text())["first_nonfinite"]["module"] == "norm"
