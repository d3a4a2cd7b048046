"""User and library text never goes through rich markup: ``[minilm]``, ``[bold]`` and friends come out as
written, in every section of every renderer."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from nanprobe.cli.cmd_report import history_table
from nanprobe.render import render_diagnosis, render_scan
from tests.cli import models
from tests.cli.helpers import run_cli

HINT = "pip install 'nanprobe[minilm]'"


def _text(renderable: Any, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, emoji=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


REPORT: dict[str, Any] = {
    "status": "nonfinite",
    "first_nonfinite": {"module": "layers[0].[bold]", "module_type": "Block[minilm]", "phase": "forward",
                        "kind": "nan", "batch_index": 0, "samples": [1], "op": "aten.div",
                        "source": "/data/[run]/model.py:3"},
    "nonfinite_parameters": ["emb.[red]weight"],
    "latent": [{"module": "mask[italic]", "kind": "inf"}],
    "verdict": {"cause": "unknown", "summary": f"the encoder is missing: {HINT}",
                "evidence": ["[bold]train mode[/bold] -> finite"], "fix": f"run {HINT} [link=x]first[/link]",
                "root": {"module": "enc.[dim]", "evidence": "[b]why[/b]"}},
    "replay": [{"variant": "dropout [p=0]", "changes": {"[dim]": "x"}, "nonfinite": True, "samples": [1]}],
    "sample_details": [{"sample": 1, "notes": ["row [bold]1[/bold] is empty"]}],
    "config_audit": [{"key": "model.[minilm]", "config_value": "[on]", "model_value": "[off]", "reached": False,
                      "message": "[minilm] never reached the model"}],
    "layers": [{"index": 0, "module": "layers[0].[bold]", "module_type": "Block[minilm]", "phase": "forward",
                "min": 0.0, "max": 1.0, "absmax": 1.0, "nan": 1, "inf": 0, "role": "origin"}],
    "repro": "/tmp/[repro]/r.py",
}


@pytest.mark.parametrize("width", [100, 80])
def test_every_section_of_a_diagnosis_shows_brackets_as_written(width: int) -> None:
    text = _text(render_diagnosis(REPORT), width=width)
    flat = " ".join(text.split())
    for literal in ("layers[0].[bold]", "Block[minilm]", "/data/[run]/model.py:3", "emb.[red]weight",
                    "mask[italic]", HINT, "[bold]train mode[/bold] -> finite", "[link=x]first[/link]", "enc.[dim]",
                    "[b]why[/b]", "dropout [p=0]", "[dim]=x", "row [bold]1[/bold] is empty", "model.[minilm]",
                    "[on]", "[off]", "[minilm] never reached the model", "/tmp/[repro]/r.py"):
        assert literal in flat or literal in text.replace("\n", ""), literal


def test_scan_and_history_show_brackets_as_written() -> None:
    scan = {"findings": [{"location": "buffer[x]", "name": "bn.[bold]running_var", "reason": "[minilm] reason",
                          "score": 0.9, "nonfinite": True, "nan": 1, "inf": 0, "min": 0.0, "max": 1.0}],
            "groups": {"buffer": 1}, "tensors_scanned": 1}
    text = _text(render_scan(scan, title="nanprobe scan: runs/[minilm]/ckpt.pt"))
    for literal in ("runs/[minilm]/ckpt.pt", "buffer[x]", "bn.[bold]running_var", "[minilm] reason"):
        assert literal in text, literal
    history = _text(history_table([{"step": 1, "loss[bold]": 0.5, "tag": "[minilm]"}]))
    assert "loss[bold]" in history and "[minilm]" in history


def test_trace_of_a_model_whose_module_names_look_like_markup(tmp_path: Path) -> None:
    checkpoint, batches = tmp_path / "model.pt", tmp_path / "batches.pt"
    torch.save({"state_dict": models.make_bracketed().state_dict()}, checkpoint)
    torch.save(models.make_batches(), batches)
    result = run_cli("trace", checkpoint, "--model", "tests.cli.models:make_bracketed", "--batches", batches,
                     "--no-color")
    assert result.code == 1, result.err
    origin = next(line for line in result.out.splitlines() if line.startswith("module "))
    assert origin.split()[-1] == "blocks.[minilm]"
    assert "blocks.[bold]" in result.out and "blocks.[minilm]" in result.out
