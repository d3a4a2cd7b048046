"""`nanprobe report` and `nanprobe replay` on bundles written by the monitor."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from nanprobe.cli.main import main
from nanprobe.errors import NonFiniteError
from nanprobe.monitoring import monitor
from tests.monitoring.models import FACTORY_ENCODER, FACTORY_LOGNET, bad_batch, good_batch, make_encoder, make_lognet


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([*argv, "--no-color"], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def encoder_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("enc")
    model = make_encoder().eval()
    ids = torch.randint(1, 20, (4, 6), generator=torch.Generator().manual_seed(1))
    ids[2] = 0
    with pytest.raises(NonFiniteError), monitor(model, out_dir=out, run_name="enc", factory=FACTORY_ENCODER,
                                                config={}) as mon, torch.no_grad():
        mon.log(loss=0.5, grad_norm=1.5)
        model(ids)
    return out / "enc-step0"


@pytest.fixture(scope="module")
def pickled_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pkl")
    model = make_lognet()
    with pytest.raises(NonFiniteError), monitor(model, out_dir=out, run_name="pkl"):
        model(good_batch())
        model(bad_batch())
    return out / "pkl-step1"


def test_replay_reproduces_the_recorded_origin(encoder_bundle: Path, tmp_path: Path) -> None:
    recorded = json.loads((encoder_bundle / "report.json").read_text())["first_nonfinite"]
    assert recorded["module"] == "encoder.layers.0"
    code, out, err = _cli("replay", str(encoder_bundle), "--json", str(tmp_path / "r.json"))
    assert code == 1, err
    assert "fully_masked_attention" in out and "the same origin as recorded" in out
    replayed = json.loads((tmp_path / "r.json").read_text())
    assert replayed["first_nonfinite"]["module"] == recorded["module"]
    assert replayed["first_nonfinite"]["samples"] == [2] and replayed["bundle"]["same_origin"] is True


def test_replay_of_a_pickled_model_needs_trust(pickled_bundle: Path) -> None:
    code, out, err = _cli("replay", str(pickled_bundle))
    assert code == 2 and out == "" and "--trust-pickle" in err and len(err.strip().splitlines()) == 1
    code, out, err = _cli("replay", str(pickled_bundle), "--trust-pickle")
    assert code == 1, err
    assert "replay: origin" in out


def test_replay_with_factory_on_the_lognet(tmp_path: Path) -> None:
    model = make_lognet()
    with pytest.raises(NonFiniteError), monitor(model, out_dir=tmp_path, run_name="ln", factory=FACTORY_LOGNET,
                                                config={"dim": 4}):
        model(bad_batch(rows=(0,)))
    code, _, err = _cli("replay", str(tmp_path / "ln-step0"), "--json", str(tmp_path / "r.json"))
    assert code == 1, err
    recorded = json.loads((tmp_path / "ln-step0" / "report.json").read_text())["first_nonfinite"]
    assert json.loads((tmp_path / "r.json").read_text())["first_nonfinite"]["module"] == recorded["module"]


def test_report_renders_step_history_and_diagnosis(encoder_bundle: Path) -> None:
    code, out, err = _cli("report", str(encoder_bundle))
    assert code == 0, err
    assert "fully_masked_attention" in out and "encoder.layers.0" in out
    assert "step" in out and "history (last 1 of 1 steps kept)" in out and "1.5" in out
    assert f"nanprobe replay {encoder_bundle}" in out


def test_report_json_and_html(encoder_bundle: Path, tmp_path: Path) -> None:
    code, out, _ = _cli("report", str(encoder_bundle), "--json")
    assert code == 0 and json.loads(out)["step"] == 0
    code, out, _ = _cli("report", str(encoder_bundle), "--html")
    assert code == 0 and out.strip() == str((encoder_bundle / "report.html").resolve())
    code, out, _ = _cli("report", str(encoder_bundle), "--html", str(tmp_path / "copy.html"))
    assert code == 0 and (tmp_path / "copy.html").read_text() == (encoder_bundle / "report.html").read_text()


@pytest.mark.parametrize("command", ["report", "replay"])
def test_bad_and_incomplete_bundles_exit_2_with_one_line(command: str, tmp_path: Path) -> None:
    code, out, err = _cli(command, str(tmp_path / "nope"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "does not exist" in err
    partial = tmp_path / ".run-step3.partial-123"
    partial.mkdir()
    (partial / "report.json").write_text("{}")
    code, out, err = _cli(command, str(partial))
    assert code == 2 and err.count("\n") == 1 and "incomplete" in err and "interrupted" in err
