"""The user's own batch does not fit the user's model: exit 2 with the model's own message and the batch that
raised it, never "internal error" (exit 3). The three cases people hit in their first hour."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.cli import models
from tests.cli.helpers import Result, one_error_line, run_cli


def _trace(tmp_path: Path, model: torch.nn.Module, factory: str, batches: list[object]) -> Result:
    checkpoint, batch_file = tmp_path / "model.pt", tmp_path / "batches.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    torch.save(batches, batch_file)
    return run_cli("trace", checkpoint, "--model", factory, "--batches", batch_file, "--no-color")


def _assert_input_error(result: Result, *fragments: str) -> str:
    assert result.code == 2, (result.code, result.err)
    line = one_error_line(result)  # one line, "nanprobe: error: ", no traceback
    assert "internal error" not in line and "bug in nanprobe" not in line
    for fragment in fragments:
        assert fragment in line, line
    return line


def test_one_channel_images_into_a_three_channel_model(tmp_path: Path) -> None:
    good = torch.randn(4, 3, 16, 16)
    gray = torch.randn(4, 1, 16, 16)  # images_1ch.pt
    result = _trace(tmp_path, models.make_convnet(), "tests.cli.models:make_convnet", [good, gray])
    _assert_input_error(result, "batch 1", "expected input[4, 1, 16, 16] to have 3 channels")


def test_hf_batch_with_a_misspelt_key(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    ids = torch.randint(0, models.TINY_BERT["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(0))
    result = _trace(tmp_path, models.make_tiny_bert(), "tests.cli.models:make_tiny_bert", [{"input_id": ids}])
    # BertModel.forward takes **kwargs, so the batch binds; the model itself says what is missing.
    _assert_input_error(result, "batch 0", "input_ids")


def test_hf_batch_with_float_input_ids(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    result = _trace(tmp_path, models.make_tiny_bert(), "tests.cli.models:make_tiny_bert",
                    [{"input_ids": torch.rand(2, 6) * 40}])
    _assert_input_error(result, "batch 0", "Expected tensor for argument #1 'indices' to have one of the following "
                        "scalar types: Long, Int; but got torch.FloatTensor")
