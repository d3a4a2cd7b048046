"""`python -m ur4rec.demo --quick`: the original failure end to end on synthetic data, its facts checked in the
output and in the --json file; the demo failing loudly when a fact does not hold; `nanprobe demo` pointing here."""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nanprobe.cli import cmd_demo
from nanprobe.cli.main import main as nanprobe_main
from tests.architecture import import_graph
from ur4rec.demo import cli

ROOT = Path(__file__).resolve().parents[3]


def _demo(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([*argv, "--no-progress", "--no-color"], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


@pytest.mark.slow
def test_python_m_ur4rec_demo_quick_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "ur4rec.demo", "--quick", "--data", "synthetic", "--workdir", str(tmp_path / "work"),
         "--json", str(tmp_path / "demo.json"), "--no-progress", "--no-color"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    text = _flat(proc.stdout)
    for step in ("1/6 data", "2/6 train like the original", "3/6 evaluate under the monitor", "4/6 nanprobe trace",
                 "5/6 fix and retrain", "6/6 report"):
        assert step in text, step
    assert "data: synthetic twin of MovieLens" in text
    assert "verdict: fully_masked_attention" in text
    for line in ("dropout p=0 -> still NaN", "train mode -> finite", "fast path off -> finite"):
        assert f"- {line}" in text, line
    assert "config audit: sasrec_dropout: config 0.0, model 0.1" in text
    assert "all 16 expected facts held" in text and "FAILED" not in text
    assert f"python -m ur4rec.demo: wrote {tmp_path / 'demo.json'}" in _flat(proc.stderr)

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
    trace_text = Path(trace["text"]).read_text()  # nanprobe's own rendering of the same report
    assert "fully_masked_attention" in trace_text and "sasrec.blocks.0.attn" in trace_text
    assert json.loads(Path(trace["json"]).read_text())["verdict"]["cause"] == "fully_masked_attention"
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

    monkeypatch.setattr(cli, "build_like_the_original", sound)
    code, out, err = _demo(["--quick", "--data", "synthetic", "--workdir", str(tmp_path / "w"),
                            "--json", str(tmp_path / "d.json")])
    assert code == 1
    assert "the demo's expected facts did not hold: sasrec_dropout never reached the model" in _flat(err)
    assert json.loads((tmp_path / "d.json").read_text())["ok"] is False
    assert "FAILED" in out and "4/6" not in out  # stopped before the trace


def test_workdir_not_made_by_the_demo_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "runs [old]"  # brackets: printed as they are, not read as rich markup
    work.mkdir()
    (work / "mine.txt").write_text("user data")
    code, _, err = _demo(["--quick", "--workdir", str(work)])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"python -m ur4rec.demo: error: --workdir {str(work)!r} is not empty and was not made by "
                          "the demo")
    assert (work / "mine.txt").read_text() == "user data"


def test_the_mistake_lives_only_in_original_setup() -> None:
    """ur4rec builds its models from the config; the hand-listed construction is one module of the demo, which
    only the demo's entry point imports."""
    src = ROOT / "ur4rec"
    graph = import_graph(ROOT, "ur4rec")
    assert sorted(m for m, deps in graph.items() if "ur4rec.demo.original_setup" in deps) == ["ur4rec.demo.cli"]
    hand_built = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.py")
                        if "UR4RecV2MoE(ModelConfig(" in p.read_text())
    assert hand_built == ["demo/original_setup.py"]
    from ur4rec.demo.original_setup import build_like_the_original

    assert cli.build_like_the_original is build_like_the_original


def test_nanprobe_demo_points_to_ur4rec() -> None:
    for argv in (["demo"], ["demo", "--quick", "--data", "synthetic", "--workdir", "x", "--no-progress"]):
        out, err = io.StringIO(), io.StringIO()
        assert nanprobe_main([*argv, "--no-color"], stdout=out, stderr=err) == 2
        assert err.getvalue().strip() == ("nanprobe: error: the demo moved: run `python -m ur4rec.demo` from the "
                                          "repository checkout (make demo)")
        assert out.getvalue() == ""
    assert "python -m ur4rec.demo" in cmd_demo.HELP and "reference workload" in cmd_demo.HELP
    tree = ast.parse(Path(cmd_demo.__file__).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.split(".")[0] == "ur4rec"], imported
