"""Precision headroom: a model built to overflow float16 in two known layers, and to fit bfloat16, gets exactly
those two layers predicted for fp16 and none for bf16, and running them in that dtype agrees."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from nanprobe.cli.main import main
from nanprobe.errors import InputError
from nanprobe.precision import parse_dtype, precision_report

FACTORY = "tests.core.test_precision:make_two_hot"


class TwoHot(nn.Module):
    """Two Linear layers whose outputs reach about 1e5 (fp16's max is 65504), each followed by a LayerNorm
    that brings the values back; a third Linear reaches only 1e3."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(8, 16)
        self.norm1 = nn.LayerNorm(16)
        self.wide = nn.Linear(16, 16)
        self.norm2 = nn.LayerNorm(16)
        self.mild = nn.Linear(16, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mild(self.norm2(self.wide(self.norm1(self.up(x))))))


def make_two_hot() -> nn.Module:
    torch.manual_seed(0)
    model = TwoHot().eval()
    with torch.no_grad():
        model.up.weight.mul_(1e5)
        model.wide.weight.mul_(1e5)
        model.mild.weight.mul_(1e3)
    return model


def _batch() -> torch.Tensor:
    return torch.randn(6, 8, generator=torch.Generator().manual_seed(1))


def test_fp16_predicts_exactly_the_two_layers_and_the_confirmation_agrees() -> None:
    report = precision_report(make_two_hot(), [_batch()], dtype="fp16")
    assert report.dtype == "float16" and report.source_dtype == "float32"
    assert report.predicted == ["up", "wide"] and report.confirmed == ["up", "wide"] and report.agrees
    up = next(layer for layer in report.layers if layer.module == "up")
    assert up.absmax > 65504 and up.headroom < 1 and up.how in ("autocast", "cast")
    mild = next(layer for layer in report.layers if layer.module == "mild")
    assert not mild.predicted and mild.confirmed is None and 1 < mild.headroom < 1e3
    assert report.whole_model in ("nan", "inf")


def test_bf16_fits() -> None:
    report = precision_report(make_two_hot(), [_batch()], dtype="bf16")
    assert report.predicted == [] and report.confirmed == [] and not report.overflows
    assert report.whole_model == "finite"


def test_values_that_would_flush_to_zero_are_counted() -> None:
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    with torch.no_grad():
        model[0].weight.fill_(1e-9)
        model[0].bias.zero_()
    report = precision_report(model, [torch.ones(3, 4)], dtype="fp16", confirm=False)
    layer = next(layer for layer in report.layers if layer.module == "0")
    assert layer.flush_share == 1.0  # 4e-9 is below float16's smallest subnormal / 2
    assert precision_report(model, [torch.ones(3, 4)], dtype="bf16", confirm=False).layers[0].flush_share == 0.0


def test_the_model_is_left_as_it_was() -> None:
    model = make_two_hot()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    precision_report(model, [_batch()], dtype="fp16")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.dtype == torch.float32 for p in model.parameters()) and not model.training


def test_bad_dtype_is_an_input_error() -> None:
    assert parse_dtype("BF16") is torch.bfloat16
    with pytest.raises(InputError, match="fp16 or bf16"):
        parse_dtype("fp8")


def test_the_command(tmp_path: Path) -> None:
    ckpt, batches = tmp_path / "m.pt", tmp_path / "b.pt"
    torch.save({"model_state_dict": make_two_hot().state_dict()}, ckpt)
    torch.save([_batch()], batches)
    out, err = io.StringIO(), io.StringIO()
    args = ["precision", str(ckpt), "--model", FACTORY, "--batches", str(batches), "--dtype", "fp16",
            "--json", str(tmp_path / "p.json"), "--html", str(tmp_path / "p.html"), "--no-color"]
    assert main(args, stdout=out, stderr=err) == 1, err.getvalue()
    text = out.getvalue()
    assert "OVERFLOWS" in text and "2 layer(s) overflow float16: up, wide" in text
    data = json.loads((tmp_path / "p.json").read_text())
    assert [layer["module"] for layer in data["layers"] if layer["predicted"]] == ["up", "wide"]
    assert "<img" in (tmp_path / "p.html").read_text()
    args[args.index("fp16")] = "bf16"
    assert main(args, stdout=io.StringIO(), stderr=io.StringIO()) == 0
