"""At 80 columns, and whenever the output is piped or redirected, module names and numbers are never cut:
the layers table folds the module column and drops its least important columns first."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from rich.console import Console

from nanprobe.cli.context import PIPE_WIDTH, CLIContext, output_width
from nanprobe.render import render_diagnosis, render_scan
from tests.cli.conftest import FACTORY, Files
from tests.cli.helpers import run_cli

NAMES = [f"sasrec.blocks.{i}.attn.out_proj" for i in range(6)]


def _text(renderable: Any, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, emoji=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _report(names: list[str]) -> dict[str, Any]:
    layers = [{"index": i, "module": name, "module_type": "NonDynamicallyQuantizableLinear", "phase": "forward",
               "min": -163456.7, "max": 3.4e38, "absmax": 3.4e38, "nan": 163840 if i >= 2 else 0, "inf": 0,
               "role": "origin" if i == 2 else ("propagated" if i > 2 else None)} for i, name in enumerate(names)]
    return {"status": "nonfinite", "first_nonfinite": {"module": names[2], "module_type": "Linear"},
            "verdict": {"cause": "unknown", "summary": "s"}, "layers": layers}


def _layer_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("Layers around it")
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start + 1: end]


def _module_cells(text: str) -> list[str]:
    """The module column of the layers table, line by line (a folded name continues on the next lines)."""
    header, _, *body = _layer_lines(text)
    at = [cell.strip() for cell in header.split("┃")].index("module")
    return [line.split("│")[at].strip() for line in body if "│" in line]


def _module_column(text: str) -> str:
    return "".join(_module_cells(text))


@pytest.mark.parametrize("width", [80, 60])
def test_layers_table_keeps_module_names_and_numbers_whole(width: int) -> None:
    text = _text(render_diagnosis(_report(NAMES)), width)
    assert "…" not in text
    column = _module_column(text)
    for name in NAMES:
        assert name in column, (name, text)
        if width == 80:  # short enough to stay on one line
            assert any(f" {name} " in f" {line} " for line in _layer_lines(text)), (name, text)
    assert "3.4e+38" in text and "163840" in text
    assert max(len(line) for line in text.splitlines()) <= width


def test_low_priority_columns_go_first() -> None:
    wide = _layer_lines(_text(render_diagnosis(_report(NAMES)), 200))[0]
    narrow = _layer_lines(_text(render_diagnosis(_report(NAMES)), 80))[0]
    assert all(col in wide for col in ("phase", "min", "max", "type", "absmax", "nan", "inf", "role"))
    for kept in ("module", "absmax", "nan", "role"):
        assert kept in narrow
    assert "phase" not in narrow and " min " not in narrow


def test_a_name_longer_than_the_screen_folds_at_its_dots() -> None:
    long = "encoder.layers.0.self_attention.multi_head_attention_with_rotary_embeddings.output_projection"
    text = _text(render_diagnosis(_report([*NAMES[:2], long, *NAMES[3:]])), 80)
    assert "…" not in text
    assert long in _module_column(text)
    assert any(cell.endswith(".") for cell in _module_cells(text))  # broken after a dot, not mid-word


def test_scan_table_keeps_names_and_numbers_whole_at_80() -> None:
    findings = [{"location": "optimizer", "name": f"optimizer/state/sasrec.blocks.{i}.attn.in_proj_weight/exp_avg_sq",
                 "reason": "12/4096 NaN in optimizer state: the next step writes NaN into the weights",
                 "score": 0.8, "nonfinite": True, "nan": 12, "inf": 0, "min": -163456.7, "max": 3.4e38}
                for i in range(3)]
    text = _text(render_scan({"findings": findings, "groups": {"optimizer": 3}, "tensors_scanned": 3}), 80)
    assert "…" not in text and "-1.635e+05" in text  # max is the first column to go; min stays whole
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = "".join(line.split("│")[3].strip() for line in text.splitlines() if line.count("│") >= 4)
    for i in range(3):
        assert f"optimizer/state/sasrec.blocks.{i}.attn.in_proj_weight/exp_avg_sq" in flat


def test_piped_output_uses_columns_else_a_fixed_width(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = io.StringIO()
    assert output_width(pipe, {"COLUMNS": "80"}) == 80

    def no_terminal(fd: int = 0) -> os.terminal_size:
        raise OSError("not a terminal")

    monkeypatch.setattr(os, "get_terminal_size", no_terminal)
    assert output_width(pipe, {}) == PIPE_WIDTH
    assert output_width(pipe, {"COLUMNS": "junk"}) == PIPE_WIDTH
    ctx = CLIContext.create(stdout=pipe, stderr=io.StringIO())
    assert ctx.out.width == PIPE_WIDTH
    assert CLIContext.create(stdout=pipe, stderr=io.StringIO(), width=120).out.width == 120


def test_trace_piped_at_80_columns(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = run_cli("trace", files.generic, "--model", FACTORY, "--batches", files.batches, "--no-color")
    assert result.code == 1, result.err
    assert "…" not in result.out
    assert max(len(line) for line in result.out.splitlines()) <= 80
    header = next(line for line in result.out.splitlines() if "┃" in line and "module" in line)
    assert "┃┃" not in header.replace(" ", "")
    body = result.out[result.out.index("Layers around it"):result.out.index("Replays")]
    for name in ("<root>", "norm", "fc1", "act", "fc2"):
        assert f" {name} " in body, body


def test_report_header_folds_a_long_bundle_path() -> None:
    from pathlib import Path

    from nanprobe.cli.cmd_report import header

    path = "/runs/" + "experiment_" * 8 + "/nan-bundles/tinynet-step3"
    text = _text(header({"run": "r", "step": 3, "rank": 0, "world_size": 1}, Path(path)), 60)
    assert "…" not in text
    assert path in "".join(line[len("bundle       "):].strip() for line in text.splitlines()[:3])
