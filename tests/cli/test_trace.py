"""`nanprobe trace` end to end on tiny broken models: exit codes, the JSON report, every flag."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

import nanprobe.diagnosis
from nanprobe.errors import ModelRaised
from tests.cli import models
from tests.cli.conftest import CONFIG, FACTORY, Files, _ours
from tests.cli.helpers import run_cli

CONTRACT_TOP = {"nanprobe_version", "status", "first_nonfinite", "nonfinite_parameters", "latent", "verdict",
                "replay"}
EXTENSIONS = {"forward_passes", "config_audit", "sample_details", "layers", "instrumentation", "repro",
              "backward_nonfinite", "budget"}
FIRST_KEYS = {"module", "module_type", "phase", "kind", "batch_index", "samples", "op", "source"}
CAUSES = {"nonfinite_input", "nonfinite_parameter", "fully_masked_attention", "dtype_overflow", "numerical_domain",
          "dropout_dependent", "batch_size_dependent", "mode_dependent", "unknown"}


def check_contract(report: dict[str, Any]) -> None:
    assert set(report) >= CONTRACT_TOP, CONTRACT_TOP - set(report)
    assert set(report) - CONTRACT_TOP <= EXTENSIONS, set(report) - CONTRACT_TOP
    assert report["status"] in ("clean", "nonfinite")
    assert isinstance(report["nonfinite_parameters"], list) and isinstance(report["latent"], list)
    for row in report["latent"]:
        assert {"module", "kind"} <= set(row)
    for row in report["replay"]:
        assert {"variant", "changes", "nonfinite", "samples"} <= set(row)
    if report["status"] == "clean":
        assert report["first_nonfinite"] is None and report["verdict"] is None
    else:
        assert set(report["first_nonfinite"]) == FIRST_KEYS
        assert report["first_nonfinite"]["phase"] in ("forward", "backward")
        assert report["first_nonfinite"]["kind"] in ("nan", "inf")
        assert {"cause", "summary", "evidence", "fix"} <= set(report["verdict"])
        assert report["verdict"]["cause"] in CAUSES


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Records what the CLI passes to diagnose (and still runs the real engine)."""
    seen: dict[str, Any] = {}
    real = nanprobe.diagnosis.diagnose

    def wrapper(model: Any, batches: Any, **kwargs: Any) -> Any:
        seen.update(kwargs, model=model, batches=batches)
        kwargs["progress"]("spy label")  # the CLI's progress callback must accept labels
        return real(model, batches, **kwargs)

    monkeypatch.setattr(nanprobe.diagnosis, "diagnose", wrapper)
    return seen


def test_our_checkpoint_needs_no_flags(files: Files) -> None:
    out = files.root / "report.json"
    r = run_cli("trace", files.ours, "--json", out)
    assert r.code == 1
    report = json.loads(out.read_text())
    check_contract(report)
    first = report["first_nonfinite"]
    assert (first["module"], first["module_type"], first["batch_index"], first["samples"], first["kind"]) == (
        "norm", "RowNorm", 0, [2], "nan")
    assert report["verdict"]["cause"] == "numerical_domain"
    assert report["nanprobe_version"] == nanprobe.__version__
    assert next(iter(report)) == "nanprobe_version"
    assert r.out.index("NON-FINITE") < r.out.index("Where it starts") < r.out.index("Replays")
    assert "numerical_domain" in r.out and "RowNorm" in r.out
    assert "(state dict + recorded factory tests.cli.models:make_broken with its config), 2 batch(es) from " \
           "checkpoint data tests.cli.models:make_batches, mode=eval, device=cpu" in r.err


def test_clean_run_exits_0(files: Files) -> None:
    out = files.root / "clean.json"
    r = run_cli("trace", files.ours_clean, "--json", out, "--no-replay")
    assert r.code == 0, r.err
    report = json.loads(out.read_text())
    check_contract(report)
    assert report["status"] == "clean"
    assert "CLEAN" in r.out and "NON-FINITE" not in r.out


def test_generic_state_dict_with_model_and_batches(files: Files) -> None:
    out = files.root / "r.json"
    r = run_cli("trace", files.generic, "--model", FACTORY, "--batches", files.batches, "--json", out, "--no-replay")
    assert r.code == 1
    report = json.loads(out.read_text())
    check_contract(report)
    assert report["first_nonfinite"]["module"] == "norm" and report["first_nonfinite"]["samples"] == [2]


def test_bare_state_dict_clean_batches(files: Files) -> None:
    r = run_cli("trace", files.bare, "--model", FACTORY, "--batches", files.clean_batches, "--no-replay")
    assert r.code == 0, r.err


def test_whole_pickled_module_with_trust_pickle(files: Files) -> None:
    r = run_cli("trace", files.pickled, "--trust-pickle", "--batches", files.batches, "--no-replay")
    assert r.code == 1, r.err
    assert "(a pickled nn.Module)" in r.err


def test_single_tensor_batches_file_is_one_batch(files: Files, spy: dict[str, Any]) -> None:
    r = run_cli("trace", files.generic, "--model", FACTORY, "--batches", files.one_batch, "--no-replay")
    assert r.code == 1
    assert len(spy["batches"]) == 1 and spy["batches"][0].shape == (4, models.DIM)


def test_data_factory_and_max_batches(files: Files, spy: dict[str, Any]) -> None:
    r = run_cli("trace", files.generic, "--model", FACTORY, "--data", "tests.cli.models:endless_batches",
                "--max-batches", "3", "--no-replay")
    assert r.code == 0, r.err
    assert len(spy["batches"]) == 3
    r = run_cli("trace", files.generic, "--model", FACTORY, "--data", "tests.cli.models:make_batches",
                "--no-replay")
    assert r.code == 1


def test_batches_flag_wins_over_checkpoint_data(files: Files) -> None:
    r = run_cli("trace", files.ours, "--batches", files.clean_batches, "--no-replay")
    assert r.code == 0, r.err
    assert f"from --batches {files.clean_batches}" in r.err


def test_dict_batches_and_two_argument_forward(tmp_path: Path) -> None:
    ckpt = tmp_path / "masked.pt"
    torch.save({"model": models.make_masked().state_dict(), "config": {"dim": models.DIM}}, ckpt)
    batches = tmp_path / "masked_batches.pt"
    torch.save(models.make_masked_batches(), batches)
    out = tmp_path / "r.json"
    r = run_cli("trace", ckpt, "--model", "tests.cli.models:make_masked", "--batches", batches, "--json", out,
                "--no-replay")
    assert r.code == 1, r.err
    assert json.loads(out.read_text())["first_nonfinite"]["samples"] == [1]


def test_flags_reach_the_engine(files: Files, spy: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  hidden: 8\n  dropout: 0.3\n")
    r = run_cli("trace", files.ours, "--mode", "train", "--backward", "--config", config, "--device", "cpu",
                "--repro", tmp_path / "repro", "--no-replay")
    assert r.code == 1, r.err
    assert spy["mode"] == "train" and spy["backward"] is True and spy["replay"] is False
    assert spy["config"] == {"model": {"hidden": 8, "dropout": 0.3}}
    assert Path(spy["repro_dir"]) == tmp_path / "repro"
    assert all(b.device.type == "cpu" for b in spy["batches"])
    assert next(spy["model"].parameters()).device.type == "cpu"


def test_checkpoint_mode_and_run_config_are_used(tmp_path: Path, spy: dict[str, Any]) -> None:
    path = _ours(tmp_path / "train.pt", "tests.cli.models:clean_batches", run_config={"optim": {"lr": 1.0}})
    data = torch.load(path, weights_only=True)
    data["nanprobe"]["mode"] = "train"
    torch.save(data, path)
    assert run_cli("trace", path, "--no-replay").code == 0
    assert spy["mode"] == "train" and spy["config"] == {"optim": {"lr": 1.0}}
    assert run_cli("trace", path, "--mode", "eval", "--no-replay").code == 0
    assert spy["mode"] == "eval"


def test_backward_finds_a_nonfinite_gradient(files: Files) -> None:
    out = files.root / "bw.json"
    r = run_cli("trace", files.generic, "--model", FACTORY, "--batches", files.batches, "--backward",
                "--json", out, "--no-replay")
    assert r.code == 1, r.err
    check_contract(json.loads(out.read_text()))


def test_repro_directory_is_written(files: Files) -> None:
    out = files.root / "r.json"
    repro = files.root / "repro"
    r = run_cli("trace", files.ours, "--repro", repro, "--json", out)
    assert r.code == 1, r.err
    report = json.loads(out.read_text())
    assert report["repro"] and Path(report["repro"]).exists()
    assert Path(report["repro"]).resolve().parent == repro.resolve()


def test_model_raising_inside_the_engine_is_exit_2(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise ModelRaised("the model raised RuntimeError in control batch 0 (eval mode): mat1 and mat2 shapes "
                          "cannot be multiplied (4x3 and 4x8)")

    monkeypatch.setattr(nanprobe.diagnosis, "diagnose", boom)
    r = run_cli("trace", files.ours)
    assert r.code == 2
    errors = [line for line in r.err.splitlines() if line.startswith("nanprobe: error:")]
    assert errors == ["nanprobe: error: the model raised RuntimeError in control batch 0 (eval mode): mat1 and "
                      "mat2 shapes cannot be multiplied (4x3 and 4x8); check that --model and the batches match "
                      "(rerun with --debug for the traceback)"]
    assert "Traceback" not in r.err


def test_progress_shows_on_a_terminal() -> None:
    from nanprobe.cli.cmd_trace import _progress
    from nanprobe.cli.context import CLIContext

    buffer = io.StringIO()
    ctx = CLIContext(out=Console(file=io.StringIO()), err=Console(file=buffer, force_terminal=True, width=60))
    with _progress(ctx) as progress:
        progress("replay: train mode")
    assert "nanprobe: control run" in buffer.getvalue() or "replay: train mode" in buffer.getvalue()
    quiet = CLIContext(out=Console(file=io.StringIO()), err=Console(file=io.StringIO()))
    with _progress(quiet) as progress:
        progress("replay: train mode")
    assert quiet.err.file.getvalue() == ""  # type: ignore[attr-defined]


def test_config_constant_is_what_the_checkpoint_holds(files: Files) -> None:
    data = torch.load(files.generic, weights_only=True)
    assert data["config"] == CONFIG


def test_render_takes_the_diagnosis_object_or_its_dict() -> None:
    from nanprobe.render import render_diagnosis

    model = models.make_broken()
    diagnosis = nanprobe.diagnosis.diagnose(model, models.make_batches(), replay=False)

    def text(report: Any) -> str:
        console = Console(file=io.StringIO(), width=100, color_system=None)
        console.print(render_diagnosis(report))
        return console.file.getvalue()  # type: ignore[attr-defined]

    assert text(diagnosis) == text(diagnosis.to_dict())
    assert "RowNorm" in text(diagnosis)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_moves_model_and_batches(files: Files, spy: dict[str, Any]) -> None:
    r = run_cli("trace", files.ours, "--device", "cuda", "--no-replay")
    assert r.code == 1, r.err
    assert all(b.device.type == "cuda" for b in spy["batches"])
    assert next(spy["model"].parameters()).device.type == "cuda"
