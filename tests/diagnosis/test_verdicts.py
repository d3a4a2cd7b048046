"""Verdicts people can trust: overflow told from a domain error by measured ranges, where to fix it
(``verdict.root``), a NaN weight under autocast, roles in the layers table, rejected candidates, and modules
built inside ``forward``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from nanprobe import diagnose
from nanprobe.monitoring import monitor
from nanprobe.postmortem.bundle import load_bundle
from nanprobe.render import render_diagnosis


def _text(d: object) -> str:
    console = Console(file=io.StringIO(), width=200, no_color=True)
    console.print(render_diagnosis(d))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_a_huge_input_into_layernorm_is_an_overflow_not_an_eps_problem() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 4)).eval()
    d = diagnose(model, [torch.randn(4, 8) * 1e21])
    assert d.first_nonfinite.module == "1" and d.first_nonfinite.op == "aten.native_layer_norm"
    assert d.cause == "dtype_overflow", d.verdict.evidence
    assert "eps" not in d.verdict.fix.split(":")[0]
    assert any(e.startswith("rejected numerical_domain") for e in d.verdict.evidence)
    assert any("overflow, not a domain error" in e for e in d.verdict.evidence)
    assert d.verdict.root is not None and d.verdict.root.module == "<input>"
    assert "the batch itself reaches |max| " in d.verdict.root.evidence


def test_a_weight_scaled_by_1e37_is_named_as_the_root() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=4, n_embd=32, n_head=2, vocab_size=64, n_positions=32)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.h[2].mlp.c_fc.weight.mul_(1e37)
    d = diagnose(model, [{"input_ids": torch.randint(0, 64, (2, 16))}])
    assert d.cause == "dtype_overflow", d.verdict.evidence
    root = d.verdict.root
    assert root is not None and root.module == "transformer.h.2.mlp.c_fc", root
    assert root.parameter == "transformer.h.2.mlp.c_fc.weight"
    assert "times its 3 peers'" in root.evidence and "transformer.h.*.mlp.c_fc.weight" in root.evidence
    data = json.loads(d.to_json())
    assert data["verdict"]["root"]["parameter"] == "transformer.h.2.mlp.c_fc.weight"
    text = _text(d)
    assert "root" in text and "transformer.h.2.mlp.c_fc.weight" in text


def test_weights_grown_by_a_huge_learning_rate_overflow_layernorm() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.LayerNorm(32), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e6)
    x, y = torch.randn(16, 8), torch.randn(16, 1)
    for _ in range(40):  # train until the loss is no longer finite
        loss = ((model(x) - y) ** 2).mean()
        if not torch.isfinite(loss):
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.isfinite(loss)
    d = diagnose(model, [x], mode="train")
    assert d.status == "nonfinite" and d.cause in ("dtype_overflow", "nonfinite_parameter"), d.verdict.evidence
    assert d.cause != "numerical_domain"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_nan_weight_under_autocast_is_a_nonfinite_parameter(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    with torch.no_grad():
        model[2].weight[1, 3] = float("nan")
    with torch.autocast("cpu", dtype=dtype):
        d = diagnose(model, [torch.randn(5, 4)])
    assert d.nonfinite_parameters == ["2.weight"]
    assert d.cause == "nonfinite_parameter", d.verdict.evidence
    assert d.first_nonfinite.module == "2"


def test_roles_under_a_nonfinite_parameter_mark_the_owner_as_origin() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    with torch.no_grad():
        model[2].bias[0] = float("nan")
    d = diagnose(model, [torch.randn(3, 4)])
    roles = {row.module: row.role for row in d.layers}
    assert d.cause == "nonfinite_parameter"
    assert roles == {"": "propagated", "0": None, "1": None, "2": "origin"}


class _BuildsItsLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.CrossEntropyLoss()(self.lin(x), y)  # not registered: shown as <CrossEntropyLoss>


def test_a_module_built_inside_forward_is_named_by_its_type_everywhere(tmp_path: Path) -> None:
    model = _BuildsItsLoss()
    batch = (torch.randn(3, 4), torch.full((3,), -100))
    d = diagnose(model, [batch], mode="train")
    assert d.first_nonfinite.module == "<CrossEntropyLoss>" and d.cause == "numerical_domain"
    assert "ignore_index" in d.verdict.fix
    assert "<CrossEntropyLoss>" in _text(d)
    assert json.loads(d.to_json())["first_nonfinite"]["module"] == "<CrossEntropyLoss>"
    with monitor(model, out_dir=tmp_path, on_nonfinite="dump") as mon:
        model(*batch)
    report = load_bundle(mon.bundles[0]).report
    assert report.first_nonfinite.module == "<CrossEntropyLoss>"
    assert any(row.module == "<CrossEntropyLoss>" and row.role == "origin" for row in report.layers)


def test_the_html_report_shows_the_root() -> None:
    from nanprobe.postmortem.html import render_html

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.LayerNorm(8)).eval()
    with torch.no_grad():
        model[2].weight.mul_(1e37)
    d = diagnose(model, [torch.randn(4, 8)])
    assert d.cause == "dtype_overflow" and d.verdict.root.module == "2"
    html = render_html(d.to_json_dict(), d.layers, {})
    assert "Where to fix it (root)" in html and "output |max|" in html
