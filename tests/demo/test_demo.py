"""`nanprobe demo --quick`: the original failure end to end on synthetic data, its facts checked in the output
and in the --json file; and the demo failing loudly when a fact does not hold."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from nanprobe.cli import cmd_demo
from nanprobe.cli.main import main


def _demo(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["demo", *argv, "--no-progress", "--no-color"], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    code, out, err = _demo(["--quick", "--data", "synthetic", "--workdir", str(tmp_path / "work"),
                            "--json", str(tmp_path / "demo.json")])
    assert code == 0, err
    text = _flat(out)
    assert "data: synthetic twin of MovieLens" in text
    assert "verdict: fully_masked_attention" in text
    for line in ("dropout p=0 -> still NaN", "train mode -> finite", "fast path off -> finite"):
        assert f"- {line}" in text, line
    assert "config audit: sasrec_dropout: config 0.0, model 0.1" in text
    assert "all 16 expected facts held" in text and "FAILED" not in text

    report = json.loads((tmp_path / "demo.json").read_text())
    assert report["ok"] is True and len(report["facts"]) == 16 and all(f["ok"] for f in report["facts"])
    assert report["data"]["source"] == "synthetic"
    assert report["original"]["model_sasrec_dropout"] == 0.1 and report["original"]["config_sasrec_dropout"] == 0.0
    assert report["original"]["attention_mask_style"] == "original" and report["original"]["train_batch_size"] == 32
    broken = report["original_eval"]
    assert broken["batch_size"] == 64 and broken["bundle_cause"] == "fully_masked_attention"
    assert broken["result"]["nonfinite_samples"] == broken["padded_users"] > 0
    assert broken["result"]["nonfinite_batches"] == broken["result"]["num_batches"]
    assert report["dropout_only_fix_nonfinite_samples"] == broken["result"]["nonfinite_samples"]
    assert Path(broken["bundles"][0], "COMPLETE").is_file()
    trace = report["trace"]
    assert trace["exit_code"] == 1 and trace["verdict"]["cause"] == "fully_masked_attention"
    assert trace["first_nonfinite"]["module"] == "sasrec.blocks.0.attn"
    assert [(f["key"], f["config_value"], f["model_value"]) for f in trace["config_audit"]] == [
        ("model.sasrec_dropout", 0.0, 0.1)]
    fixed = report["fixed_eval"]["result"]
    assert fixed["nonfinite_samples"] == 0 and report["fixed"]["attention_mask_style"] == "safe"
    assert report["fixed"]["model_sasrec_dropout"] == 0.0
    for metric in ("hit@5", "ndcg@5"):
        assert report["fixed_metrics"][metric] > report["most_popular_metrics"][metric] > 0
        assert f"{report['fixed_metrics'][metric]:.4f}" in text  # the same numbers are printed


@pytest.mark.slow
def test_demo_says_which_fact_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a sound model in place of the original construction nothing goes NaN: the demo must say so."""
    from ur4rec.model import build_model
    from ur4rec.pipeline import model_config_for

    def sound(cfg, data):
        return build_model({**model_config_for(cfg, data), "attention_mask_style": "safe"})

    monkeypatch.setattr(cmd_demo, "load_original_setup", lambda: sound)
    code, out, err = _demo(["--quick", "--data", "synthetic", "--workdir", str(tmp_path / "w"),
                            "--json", str(tmp_path / "d.json")])
    assert code == 1
    assert "the demo's expected facts did not hold: sasrec_dropout never reached the model" in _flat(err)
    assert json.loads((tmp_path / "d.json").read_text())["ok"] is False
    assert "FAILED" in out and "4/6" not in out  # stopped before the trace


def test_workdir_not_made_by_the_demo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("user data")
    code, _, err = _demo(["--quick", "--workdir", str(tmp_path)])
    assert code == 2 and "is not empty and was not made by nanprobe demo" in err
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_missing_checkout_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cmd_demo, "SETUP", Path("no") / "such" / "original_setup.py")
    code, _, err = _demo(["--quick", "--workdir", str(tmp_path / "w")])
    assert code == 2 and "needs the repository checkout" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_the_mistake_lives_only_in_the_example() -> None:
    build = cmd_demo.load_original_setup()
    assert build.__module__ == "nanprobe_demo_original_setup"
    src = Path(cmd_demo.__file__).resolve().parents[2] / "ur4rec"
    assert not any("build_like_the_original" in p.read_text() for p in src.rglob("*.py"))
