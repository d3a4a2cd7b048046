"""The monitor must not change the path the model runs: the TransformerEncoder eval fast path keeps its NaN."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nanprobe.errors import NonFiniteError
from nanprobe.monitoring import monitor
from tests.monitoring.models import make_encoder


def _ids() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 20, (4, 6), generator=g)
    ids[2] = 0  # an all-padding sample
    return ids


def test_fast_path_nan_is_caught_under_the_monitor(tmp_path: Path) -> None:
    model = make_encoder().eval()
    with torch.no_grad():
        plain = model(_ids())
    assert torch.isnan(plain[2]).all() and torch.isfinite(plain[[0, 1, 3]]).all()  # the premise

    with pytest.raises(NonFiniteError) as info, monitor(model, out_dir=tmp_path, run_name="enc") as mon, \
            torch.no_grad():
        model(_ids())
    failure = mon.failures[0]
    assert failure.report["monitor"]["detected"]["samples"] == [2]
    assert failure.report["monitor"]["call"] == {"training": False, "grad_enabled": False, "mode": "eval",
                                                 "backward": False, "method": None, "dtype": "float32"}
    assert failure.report["first_nonfinite"]["module"] == "encoder.layers.0"  # localized although hooks hide it
    assert (tmp_path / "enc-step0" / "report.json").is_file() and "enc-step0" in str(info.value)
    assert model.training is False  # the diagnosis put the flags back


def test_dump_returns_the_same_nan_output_as_without_the_monitor(tmp_path: Path) -> None:
    model = make_encoder().eval()
    with torch.no_grad():
        plain = model(_ids())
        with monitor(model, out_dir=tmp_path, on_nonfinite="dump", diagnose=False):
            watched = model(_ids())
    assert torch.equal(plain.isnan(), watched.isnan())
    assert torch.allclose(plain.nan_to_num(), watched.nan_to_num())
