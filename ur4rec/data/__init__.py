"""Data for ur4rec: MovieLens-100k (RecBole atomic or original files), a synthetic twin, preprocessing.

``load_dataset(source=..., data_dir=..., ...)`` is the one entry point; ``python -m ur4rec.data fetch``
extracts RecBole's bundled MovieLens-100k into the cache directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .fetch import DatasetNotFoundError, default_data_dir, fetch_movielens, locate_movielens
from .files import read_movielens
from .preprocess import SequenceData, preprocess
from .synthetic import SyntheticSpec, generate

__all__ = [
    "SAMPLE_DIR",
    "DatasetNotFoundError",
    "SequenceData",
    "SyntheticSpec",
    "default_data_dir",
    "fetch_movielens",
    "load_dataset",
    "locate_movielens",
]

SAMPLE_DIR = Path(__file__).parent / "sample"


def load_dataset(source: str = "movielens", data_dir: str | Path | None = None, *, min_rating: float = 4.0,
                 min_seq_len: int = 5, synthetic: dict[str, Any] | None = None) -> SequenceData:
    """Load and preprocess a data set. ``source``: 'movielens' (files under ``data_dir`` or the cache
    directory) or 'synthetic' (seeded generator; ``synthetic`` holds :class:`SyntheticSpec` fields)."""
    if source == "synthetic":
        inter, items = generate(SyntheticSpec(**(synthetic or {})))
        return preprocess(inter, items, name="synthetic", min_rating=min_rating, min_seq_len=min_seq_len)
    if source != "movielens":
        raise ValueError(f"unknown data source {source!r}")
    folder = locate_movielens(data_dir)
    inter, items = read_movielens(folder)
    return preprocess(inter, items, name="ml-100k", min_rating=min_rating, min_seq_len=min_seq_len)
