"""ProbeResult: frame, dict, first_nonfinite and the rich rendering."""

from __future__ import annotations

import io
import json

import torch
from rich.console import Console

from nanprobe.probe import FRAME_COLUMNS, probe_model
from tests.probe import models


def render(obj: object) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(obj)
    return console.file.getvalue()  # type: ignore[attr-defined]


def failing():
    return probe_model(models.log_chain(row=3), torch.randn(4, 4))


def test_to_frame_rows_and_columns() -> None:
    result = failing()
    frame = result.to_frame()
    assert list(frame.columns) == FRAME_COLUMNS
    assert len(frame) == len(result.records) == 6
    assert frame["module"].tolist() == ["", "0", "1", "2", "3", "4"]
    roles = [r if isinstance(r, str) else None for r in frame["role"].tolist()]  # pandas may turn None to NaN
    assert roles == ["propagated", None, "origin", "propagated", "propagated", "propagated"]
    origin = frame[frame["role"] == "origin"].iloc[0]
    assert origin["module_type"] == "Log" and origin["neginf"] == 4 and origin["samples"] == [3]
    assert frame.loc[frame["module"] == "0", "nan"].item() == 0


def test_to_dict_is_json_and_has_contract_fields() -> None:
    d = failing().to_dict()
    text = json.dumps(d)
    assert '"status": "nonfinite"' in text
    assert d["first_nonfinite"] == {"module": "1", "module_type": "Log", "phase": "forward", "kind": "inf",
                                    "batch_index": 0, "samples": [3], "op": None, "source": None}
    assert d["records"][2]["outputs"]["out"]["neginf"] == 4
    assert d["nonfinite_parameters"] == [] and d["latent"] == []


def test_rich_rendering_highlights_origin() -> None:
    text = render(failing())
    assert "status: nonfinite" in text and "first produced by 1 (Log)" in text
    lines = [line for line in text.splitlines() if "Log" in line and "│" in line]
    assert len(lines) == 1 and "<< origin" in lines[0] and "4" in lines[0]
    assert "<root>" in text and "propagated" in text
    for col in ("module", "type", "phase", "min", "max", "absmax", "nan", "inf", "role"):
        assert col in text


def test_rich_rendering_clean_with_latent() -> None:
    mask = torch.zeros(2, 3, 3, dtype=torch.bool)
    mask[:, :, 2] = True
    text = render(probe_model(models.MaskedAttention(), (torch.randn(2, 3, 4), mask)))
    assert "status: clean" in text and "1 latent" in text
    assert "latent (did not reach an output): mask (inf)" in text


def test_rich_rendering_input_origin() -> None:
    x = torch.randn(3, 4)
    x[0, 0] = float("nan")
    text = render(probe_model(models.mlp(), x))
    assert "non-finite input: in[0] (nan), rows [0]" in text
    assert "<input>" in text
