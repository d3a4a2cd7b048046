from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ur4rec.config import load_config
from ur4rec.data import SequenceData, load_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "ur4rec" / "configs"
TINY = CONFIGS / "ur4rec_tiny_synthetic.yaml"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UR4REC_DATA_DIR", str(tmp_path_factory.getbasetemp() / "ur4rec-cache"))
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synth() -> SequenceData:
    return load_dataset("synthetic", synthetic={"num_users": 40, "num_items": 60, "max_len": 25, "seed": 1})


@pytest.fixture
def tiny_config_path() -> Path:
    return TINY


@pytest.fixture
def tiny_config():
    return load_config(TINY)
