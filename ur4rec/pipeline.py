"""Glue shared by the trainer and ``probe_data``: data from a DataConfig, text embeddings, model config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, DataConfig, RunConfig, resolve_text_dim
from .data import SequenceData, default_data_dir, load_dataset
from .text import build_texts, encode_cached, get_encoder

__all__ = ["data_kwargs", "load_data", "model_config_for", "text_embeddings"]

log = logging.getLogger(__name__)


def data_kwargs(cfg: DataConfig) -> dict[str, Any]:
    """Plain kwargs for :func:`ur4rec.data.load_dataset` (what a checkpoint's data spec records)."""
    data_dir = None
    if cfg.source == "movielens":
        data_dir = str(Path(cfg.data_dir).expanduser().resolve()) if cfg.data_dir else None
    return {"source": cfg.source, "data_dir": data_dir, "min_rating": float(cfg.min_rating),
            "min_seq_len": int(cfg.min_seq_len), "synthetic": dict(cfg.synthetic)}


def load_data(cfg: DataConfig) -> SequenceData:
    return load_dataset(**data_kwargs(cfg))


def model_config_for(cfg: RunConfig, data: SequenceData) -> dict[str, Any]:
    """The model section completed with the sizes it gets from the data (num_items, num_users) and the text
    encoder (text_dim)."""
    derived = {"num_items": data.num_items, "num_users": data.num_users,
               "text_dim": resolve_text_dim(cfg.model, cfg.data)}
    out = dict(cfg.model)
    for key, value in derived.items():
        if key in out and key != "text_dim" and int(out[key]) != value:
            raise ConfigError(f"model.{key}={out[key]} disagrees with the data ({value}); leave it out")
        out[key] = value
    return out


def text_embeddings(data: SequenceData, encoder_name: str, text_dim: int, cache_dir: Path | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, dict[int, str], dict[int, str]]:
    """(item_text (I+1, T), user_text (U+1, T), item texts, user texts); row 0 is padding (zeros)."""
    item_texts, user_texts = build_texts(data)
    enc = get_encoder(encoder_name, text_dim)
    cache = cache_dir if cache_dir is not None else default_data_dir() / "embeddings"
    items = encode_cached([item_texts[i] for i in range(1, data.num_items + 1)], enc, cache)
    users = encode_cached([user_texts[u] for u in range(1, data.num_users + 1)], enc, cache)
    item_t = torch.zeros(data.num_items + 1, enc.dim)
    user_t = torch.zeros(data.num_users + 1, enc.dim)
    item_t[1:] = torch.from_numpy(items)
    user_t[1:] = torch.from_numpy(users)
    return item_t, user_t, item_texts, user_texts
