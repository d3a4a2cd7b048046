"""nanprobe.loading as a library: what load_checkpoint returns, batch forms, devices."""

from __future__ import annotations

import pytest
import torch

from nanprobe.batches import ModelCall
from nanprobe.errors import InputError
from nanprobe.loading import (
    batches_from_factory,
    check_batches_fit,
    load_batches,
    load_checkpoint,
    parse_device,
)
from tests.cli import models
from tests.cli.conftest import CONFIG, FACTORY, Files


def test_our_checkpoint_fields(files: Files) -> None:
    loaded = load_checkpoint(files.ours)
    assert loaded.kind == "nanprobe" and loaded.factory == FACTORY
    assert loaded.config == CONFIG and loaded.mode == "eval"
    assert loaded.run_config == {"model": {"hidden": 8}}
    assert loaded.data_spec == {"factory": "tests.cli.models:make_batches", "kwargs": {}}
    assert loaded.model.fc1.out_features == 8
    expected = models.make_broken(**CONFIG).state_dict()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert loaded.model.training  # loading does not change flags; the engine sets the mode


def test_generic_checkpoint_with_model_spec(files: Files) -> None:
    loaded = load_checkpoint(files.generic, model_spec=FACTORY)
    assert loaded.kind == "state_dict" and loaded.run_config is None and loaded.data_spec is None
    with pytest.raises(InputError, match="pass --model"):
        load_checkpoint(files.generic)


def test_batch_file_forms(files: Files) -> None:
    assert len(load_batches(files.batches)) == 2
    one = load_batches(files.one_batch)
    assert len(one) == 1 and one[0].shape == (4, models.DIM)
    with pytest.raises(InputError, match="empty list of batches"):
        load_batches(files.empty_batches)


def test_factory_batches_are_limited() -> None:
    assert len(batches_from_factory("tests.cli.models:endless_batches", limit=5)) == 5
    assert len(batches_from_factory("tests.cli.models:make_batches", {"n": 3})) == 3


def test_check_batches_fit_forms() -> None:
    masked = models.make_masked()
    x, mask = torch.ones(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)
    call = ModelCall(args=(x,), kwargs={"mask": mask})
    check_batches_fit(masked, [{"x": x, "mask": mask}, (x, mask), [x, mask], call])
    expected = r"batch 1 \(a tensor of shape \(2, 3, 4\)\) does not fit Masked.forward\(x, mask\)"
    with pytest.raises(InputError, match=expected):
        check_batches_fit(masked, [(x, mask), x])


def test_parse_device() -> None:
    assert parse_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="unknown device"):
        parse_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no usable CUDA"):
            parse_device("cuda")
