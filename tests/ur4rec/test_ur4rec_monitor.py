"""ur4rec's trainer and evaluator run under nanprobe's monitor: a non-finite eval batch leaves a bundle that
``nanprobe replay`` diagnoses as fully_masked_attention; the sound default leaves none."""

from __future__ import annotations

import io
import json
from pathlib import Path

from nanprobe.cli.main import main as nanprobe_main
from ur4rec.evaluate import evaluate_checkpoint
from ur4rec.evaluate import main as evaluate_main
from ur4rec.train import run

ORIGINAL = {"model.attention_mask_style": "original", "model.sasrec_dropout": 0.0,
            "train.stages": {"pretrain_sasrec": {"epochs": 1, "lr": 0.003}}}


def _replay(bundle: Path, out: Path) -> dict:
    code = nanprobe_main(["replay", str(bundle), "--json", str(out), "--no-color"],
                         stdout=io.StringIO(), stderr=io.StringIO())
    assert code == 1  # non-finite reproduced from the bundle alone
    return json.loads(out.read_text())


def test_nonfinite_eval_under_the_trainer_leaves_a_replayable_bundle(tiny_config_path: Path, tmp_path: Path) -> None:
    metrics = run(tiny_config_path, tmp_path / "run", progress=False, overrides=ORIGINAL)
    assert metrics["test"]["nonfinite_samples"] > 0  # the evaluation still finished and counted them
    bundles = [Path(b) for b in metrics["nanprobe_bundles"]]
    names = sorted(b.name.split("-step")[0] for b in bundles)
    assert names == ["eval-test", "eval-val"]  # one per split, although val was evaluated several times
    assert all(b.parent == tmp_path / "run" / "nanprobe" and (b / "COMPLETE").is_file() for b in bundles)
    test_bundle = next(b for b in bundles if b.name.startswith("eval-test"))
    recorded = json.loads((test_bundle / "report.json").read_text())
    assert recorded["verdict"]["cause"] == "fully_masked_attention"
    report = _replay(test_bundle, tmp_path / "replay.json")
    assert report["verdict"]["cause"] == "fully_masked_attention"
    assert report["first_nonfinite"]["module"] == "sasrec.blocks.0.attn"
    assert report["bundle"]["same_origin"] is True
    # the config audit sees the YAML's dropout (0.0) reaching the config-built model
    audit = {f["key"]: f for f in report.get("config_audit") or []}
    assert audit["model.sasrec_dropout"]["reached"] is True


def test_evaluator_bundle_and_cli(tiny_config_path: Path, tmp_path: Path) -> None:
    run(tiny_config_path, tmp_path / "run", progress=False, overrides=ORIGINAL, monitor=False)
    assert not (tmp_path / "run" / "nanprobe").exists()  # monitor=False: no bundle
    ckpt = tmp_path / "run" / "best.pt"
    found: list[Path] = []
    result = evaluate_checkpoint(ckpt, batch_size=16, monitor_dir=tmp_path / "bundles", bundles=found)
    assert result.nonfinite_batches == result.num_batches == 4 and result.nonfinite_samples > 0
    assert len(found) == 1 and found[0].name == "eval-test-step0"
    assert _replay(found[0], tmp_path / "r.json")["verdict"]["cause"] == "fully_masked_attention"
    assert evaluate_main([str(ckpt), "--batch-size", "16"]) == 1  # default: bundle next to the checkpoint
    assert [p.name for p in (tmp_path / "run" / "nanprobe").iterdir()] == ["eval-test-step0"]


def test_sound_default_leaves_no_bundle(tiny_config_path: Path, tmp_path: Path) -> None:
    metrics = run(tiny_config_path, tmp_path, progress=False,
                  overrides={"train.stages": {"pretrain_sasrec": {"epochs": 1, "lr": 0.003}}})
    assert metrics["test"]["nonfinite_samples"] == 0
    assert metrics["nanprobe_bundles"] == [] and not (tmp_path / "nanprobe").exists()
