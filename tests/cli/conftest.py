"""Checkpoints and batch files for the CLI tests, written into tmp_path (one fixture builds them all)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `tests.cli.models:...` must be importable for --model (python -m pytest has it)
    sys.path.insert(0, str(ROOT))

from tests.cli import models  # noqa: E402

FACTORY = "tests.cli.models:make_broken"
CONFIG = {"dim": models.DIM, "hidden": 8}


@dataclass
class Files:
    root: Path
    ours: Path  # our convention: factory, config and data recorded, no flag needed
    ours_clean: Path  # same, with data that has no zero row
    generic: Path  # {"state_dict": ..., "config": ...}: needs --model
    bare: Path  # a bare state dict (default config)
    pickled: Path  # a whole nn.Module: needs --trust-pickle
    batches: Path  # list of 2 batches, row 2 of batch 0 all zeros
    clean_batches: Path
    one_batch: Path  # a single tensor, not a list
    empty_batches: Path
    text: Path
    empty: Path
    truncated: Path


def _ours(path: Path, data_factory: str, run_config: dict | None = None) -> Path:
    model = models.make_broken(**CONFIG)
    torch.save({
        "model_state_dict": model.state_dict(),
        "config": dict(CONFIG),
        "nanprobe": {"format": 1, "factory": FACTORY, "data": {"factory": data_factory, "kwargs": {}},
                     "mode": "eval", "run_config": run_config or {"model": {"hidden": 8}}},
    }, path)
    return path


@pytest.fixture
def files(tmp_path: Path) -> Files:
    model = models.make_broken(**CONFIG)
    generic = tmp_path / "generic.pt"
    torch.save({"state_dict": model.state_dict(), "config": dict(CONFIG)}, generic)
    bare = tmp_path / "bare.pt"
    torch.save(models.make_broken().state_dict(), bare)
    pickled = tmp_path / "pickled.pt"
    torch.save(models.make_broken(), pickled)
    batches = tmp_path / "batches.pt"
    torch.save(models.make_batches(), batches)
    clean = tmp_path / "clean_batches.pt"
    torch.save(models.clean_batches(), clean)
    one = tmp_path / "one_batch.pt"
    torch.save(models.make_batches(n=1)[0], one)
    empty_batches = tmp_path / "empty_batches.pt"
    torch.save([], empty_batches)
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(generic.read_bytes()[: generic.stat().st_size // 2])
    return Files(
        root=tmp_path,
        ours=_ours(tmp_path / "ours.pt", "tests.cli.models:make_batches"),
        ours_clean=_ours(tmp_path / "ours_clean.pt", "tests.cli.models:clean_batches"),
        generic=generic, bare=bare, pickled=pickled, batches=batches, clean_batches=clean, one_batch=one,
        empty_batches=empty_batches, text=text, empty=empty, truncated=truncated,
    )
