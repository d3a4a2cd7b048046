"""``nanprobe replay`` of a bundle from a model watched through ``methods=("training_step",)``: every replay
variant runs, the float64 upcast included (it once ran the original float32 module and raised "mat1 and mat2
must have the same dtype")."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nanprobe.monitoring import monitor
from tests.cli import models
from tests.cli.helpers import run_cli


def test_replay_through_training_step_runs_the_float64_variant(tmp_path: Path) -> None:
    model = models.make_stepper()
    x = torch.rand(4, models.DIM) + 0.5
    x[1] = -1.0  # log(relu(-1)) = log(0)
    y = torch.zeros(4, 1)
    with monitor(model, out_dir=tmp_path / "bundles", run_name="lit", methods=("training_step",),
                 factory="tests.cli.models:make_stepper", config={}, on_nonfinite="dump") as mon:
        loss = model.training_step((x, y))
    assert not torch.isfinite(loss) and mon.failures
    bundle = next((tmp_path / "bundles").iterdir())

    result = run_cli("replay", bundle, "--json", tmp_path / "replay.json", "--no-color")
    assert result.code == 1, result.err
    report = json.loads((tmp_path / "replay.json").read_text())
    upcast = [entry for entry in report["replay"] if entry.get("changes", {}).get("dtype") == "float64"]
    assert upcast, [entry["variant"] for entry in report["replay"]]
    for entry in upcast:
        assert entry.get("error") is None, entry["error"]
        assert isinstance(entry["nonfinite"], bool)
    assert "raised" not in result.out  # no variant of the replay table raised
