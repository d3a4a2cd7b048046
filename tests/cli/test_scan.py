"""`nanprobe scan` and scan_checkpoint: what is flagged, how it is ranked, exit codes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nanprobe.scan import scan_checkpoint
from tests.cli import models
from tests.cli.conftest import Files
from tests.cli.helpers import one_error_line, run_cli


def _trained() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    return model, opt


def _ckpt(model: nn.Module, opt: torch.optim.Optimizer, scale: float = 65536.0) -> dict:
    return {"model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(),
            "scaler": {"scale": scale, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 0}}


def test_clean_checkpoint_has_no_findings() -> None:
    model, opt = _trained()
    result = scan_checkpoint(_ckpt(model, opt))
    assert result.findings == []
    assert not result.nonfinite
    assert result.groups["parameter"] == 4 + 2 and result.groups["buffer"] == 3
    assert result.groups["optimizer"] == 6 * 3 and result.groups["scaler"] == 1


def test_ranks_nonfinite_parameter_above_optimizer_and_extremes() -> None:
    model, opt = _trained()
    with torch.no_grad():
        model[2].weight[0, 1] = float("nan")
        model[0].bias[0] = 1e5  # extreme, beyond fp16
        model[1].running_var[2] = -0.5
    ckpt = _ckpt(model, opt, scale=float("inf"))
    ckpt["optimizer_state_dict"]["state"][0]["exp_avg_sq"][0, 0] = float("nan")
    ckpt["optimizer_state_dict"]["state"][1]["exp_avg_sq"][1] = -1.0
    result = scan_checkpoint(ckpt)
    names = [f.name for f in result.findings]
    assert names[0] == "model_state_dict/2.weight"
    assert result.findings[0].nan == 1 and result.findings[0].location == "parameter"
    assert names.index("model_state_dict/1.running_var") < names.index("model_state_dict/0.bias")
    assert "scaler/scale" in names and "optimizer_state_dict/state/0/exp_avg_sq" in names
    assert "optimizer_state_dict/state/1/exp_avg_sq" in names
    neg = result.findings[names.index("optimizer_state_dict/state/1/exp_avg_sq")]
    assert neg.negative == 1 and not neg.nonfinite and "sqrt" in neg.reason
    bn = result.findings[names.index("model_state_dict/1.running_var")]
    assert bn.location == "buffer" and "negative running variance" in bn.reason
    scores = [f.score for f in result.findings]
    assert scores == sorted(scores, reverse=True)
    assert result.nonfinite
    frame = result.to_frame()
    assert list(frame["name"]) == names
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["status"] == "nonfinite" and data["findings"][0]["name"] == "model_state_dict/2.weight"


def test_tiny_scaler_and_module_object() -> None:
    model, opt = _trained()
    result = scan_checkpoint({"model": model, "optimizer": opt.state_dict(), "grad_scaler": {
        "scale": torch.tensor(1e-6), "growth_factor": 2.0}})
    assert [f.name for f in result.findings] == ["grad_scaler/scale"]
    assert not result.nonfinite and "fell to" in result.findings[0].reason
    with torch.no_grad():
        model[1].running_var.fill_(float("inf"))
    found = scan_checkpoint(model).findings
    assert [(f.location, f.name, f.inf) for f in found] == [("buffer", "1.running_var", 4)]
    assert math.isinf(found[0].absmax)


def test_nested_and_bare_state_dicts() -> None:
    state = models.make_broken().state_dict()
    state["fc1.bias"][0] = float("-inf")
    assert [f.name for f in scan_checkpoint(state).findings] == ["fc1.bias"]
    nested = scan_checkpoint({"ema": {"shadow": dict(state)}, "step": 3})
    assert [f.name for f in nested.findings] == ["ema/shadow/fc1.bias"]


def test_cli_scan_exit_codes_and_json(files: Files, tmp_path: Path) -> None:
    r = run_cli("scan", files.generic)
    assert r.code == 0 and "CLEAN" in r.out
    model, opt = _trained()
    with torch.no_grad():
        model[0].weight[1, 1] = float("nan")
    bad = tmp_path / "bad.pt"
    torch.save(_ckpt(model, opt, scale=1e-6), bad)
    out = tmp_path / "scan.json"
    r = run_cli("scan", bad, "--json", out, "--top", "1", "--no-color")
    assert r.code == 1
    assert "NON-FINITE" in r.out and "model_state_dict/0.weight" in r.out
    assert "1 more finding(s) not shown" in r.out
    data = json.loads(out.read_text())
    assert data["checkpoint"] == str(bad)
    assert [f["name"] for f in data["findings"]] == ["model_state_dict/0.weight", "scaler/scale"]


def test_cli_scan_suspicious_but_finite_exits_0(tmp_path: Path) -> None:
    state = models.make_broken().state_dict()
    state["fc1.weight"][0, 0] = 1e6
    path = tmp_path / "big.pt"
    torch.save(state, path)
    r = run_cli("scan", path)
    assert r.code == 0
    assert "SUSPICIOUS" in r.out and "fc1.weight" in r.out


@pytest.mark.parametrize("top", ["-1", "x"])
def test_cli_scan_bad_top(files: Files, top: str) -> None:
    r = run_cli("scan", files.generic, "--top", top)
    assert r.code == 2
    one_error_line(r)
