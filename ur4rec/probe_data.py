"""Rebuild evaluation batches from a checkpoint's data spec (``nanprobe trace ckpt.pt`` calls this).

The checkpoint records ``{"factory": "ur4rec.probe_data:eval_batches", "kwargs": {...}}``; the kwargs
are plain python values, so the batches can be rebuilt from the file alone.
"""

from __future__ import annotations

from typing import Any

import torch

from .data import load_dataset
from .evaluate import build_eval_set, make_batches

__all__ = ["eval_batches"]


def eval_batches(*, source: str = "movielens", data_dir: str | None = None, min_rating: float = 4.0,
                 min_seq_len: int = 5, synthetic: dict[str, Any] | None = None, split: str = "test",
                 batch_size: int = 64, max_batches: int | None = None, max_seq_len: int = 50,
                 num_negatives: int = 99, eval_seed: int = 2024) -> list[dict[str, torch.Tensor]]:
    """Batches ``{"input_ids": (B, L), "candidates": (B, C), "user_ids": (B,)}`` called as ``model(**batch)``."""
    data = load_dataset(source, data_dir, min_rating=min_rating, min_seq_len=min_seq_len, synthetic=synthetic)
    eval_set = build_eval_set(data, split, max_seq_len, num_negatives, eval_seed)
    return make_batches(eval_set, batch_size, max_batches)
