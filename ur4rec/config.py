"""Config dataclasses for ur4rec and strict loading from dicts / YAML.

A YAML run config has three sections: ``model:`` (keys of :class:`ModelConfig`, named after the model's
constructor arguments), ``train:`` (:class:`TrainConfig`) and ``data:`` (:class:`DataConfig`). Every
section is parsed strictly: an unknown key raises :class:`ConfigError` naming it, so a value that never
reaches the model (the original ``sasrec_dropout`` bug) cannot happen silently.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nanprobe import InputError

__all__ = [
    "STAGES",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "StageConfig",
    "TrainConfig",
    "load_config",
    "parse_section",
]

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("pretrain_sasrec", "pretrain_retriever", "joint_finetune", "end_to_end")
MASK_STYLES: tuple[str, ...] = ("safe", "original")
EXPERTS: tuple[str, ...] = ("sequence", "text", "item_id")


class ConfigError(InputError):
    """A config file or dict is wrong (unknown key, bad value, missing section)."""


@dataclass
class ModelConfig:
    """Constructor arguments of :class:`ur4rec.model.UR4RecV2MoE`.

    ``num_items``, ``num_users`` and ``text_dim`` come from the data (the trainer fills them in).
    Keys are prefixed by the submodule they configure (``sasrec_*`` -> ``model.sasrec``,
    ``retriever_*`` -> ``model.retriever``, ``moe_*`` -> ``model.moe``).
    """

    num_items: int = 0
    num_users: int = 0
    text_dim: int = 256
    max_seq_len: int = 50
    sasrec_hidden_dim: int = 64
    sasrec_num_blocks: int = 2
    sasrec_num_heads: int = 2
    sasrec_dropout: float = 0.1
    attention_mask_style: str = "safe"
    retriever_dim: int = 64
    retriever_dropout: float = 0.1
    retriever_init_scale: float = 5.0
    moe_experts: list[str] = field(default_factory=lambda: list(EXPERTS))
    moe_hidden_dim: int = 64
    moe_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.attention_mask_style not in MASK_STYLES:
            raise ConfigError(
                f"model.attention_mask_style must be one of {list(MASK_STYLES)}, "
                f"got {self.attention_mask_style!r}"
            )
        self.moe_experts = list(self.moe_experts)
        bad = [e for e in self.moe_experts if e not in EXPERTS]
        if bad or not self.moe_experts:
            raise ConfigError(f"model.moe_experts must be a non-empty subset of {list(EXPERTS)}, got {bad}")
        if self.sasrec_hidden_dim % self.sasrec_num_heads:
            raise ConfigError("model.sasrec_hidden_dim must be divisible by model.sasrec_num_heads")
        for key in ("sasrec_dropout", "retriever_dropout", "moe_dropout"):
            p = getattr(self, key)
            if not 0.0 <= float(p) < 1.0:
                raise ConfigError(f"model.{key} must be in [0, 1), got {p}")
        if self.sasrec_num_blocks < 1 or self.max_seq_len < 2:
            raise ConfigError("model.sasrec_num_blocks must be >= 1 and model.max_seq_len >= 2")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StageConfig:
    epochs: int = 0
    lr: float = 1e-3


@dataclass
class TrainConfig:
    seed: int = 42
    train_batch_size: int = 128
    eval_batch_size: int = 256
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_ratio: float = 0.05
    patience: int = 3
    eval_every: int = 5
    loss: str = "bce"
    num_threads: int = 2
    full_ranking: bool = True
    stages: dict[str, StageConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss not in ("bce", "bpr"):
            raise ConfigError(f"train.loss must be 'bce' or 'bpr', got {self.loss!r}")
        stages: dict[str, StageConfig] = {}
        for name, value in dict(self.stages).items():
            if name not in STAGES:
                raise ConfigError(f"train.stages: unknown stage {name!r} (known: {list(STAGES)})")
            stages[name] = value if isinstance(value, StageConfig) else parse_section(
                StageConfig, value, f"train.stages.{name}"
            )[0]
        self.stages = stages

    def stage(self, name: str) -> StageConfig:
        return self.stages.get(name, StageConfig(epochs=0))


@dataclass
class DataConfig:
    source: str = "movielens"  # movielens | synthetic
    data_dir: str | None = None
    min_rating: float = 4.0
    min_seq_len: int = 5
    text_encoder: str = "hash"  # hash | minilm
    num_negatives: int = 99
    eval_seed: int = 2024
    synthetic: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in ("movielens", "synthetic"):
            raise ConfigError(f"data.source must be 'movielens' or 'synthetic', got {self.source!r}")
        if self.text_encoder not in ("hash", "minilm"):
            raise ConfigError(f"data.text_encoder must be 'hash' or 'minilm', got {self.text_encoder!r}")


T = TypeVar("T")


def parse_section(cls: type[T], values: Mapping[str, Any] | None, section: str) -> tuple[T, list[str]]:
    """Build dataclass ``cls`` from ``values``; unknown keys raise. Returns (object, keys left at default)."""
    values = dict(values or {})
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {section}: {', '.join(unknown)} (known keys: {', '.join(known)})"
        )
    try:
        obj = cls(**values)
    except TypeError as e:
        raise ConfigError(f"bad {section} config: {e}") from e
    defaults = [k for k in known if k not in values]
    return obj, defaults


@dataclass
class RunConfig:
    """A whole run config: the three sections plus the raw dict as loaded (for the config audit)."""

    model: dict[str, Any]
    train: TrainConfig
    data: DataConfig
    raw: dict[str, Any]
    path: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: str | None = None) -> RunConfig:
        raw = dict(raw)
        unknown = sorted(set(raw) - {"model", "train", "data"})
        if unknown:
            raise ConfigError(f"unknown top-level section(s): {', '.join(unknown)} (known: model, train, data)")
        model = dict(raw.get("model") or {})
        # validate model keys early (data-derived sizes are filled in later)
        parse_section(ModelConfig, model, "model")
        train, _ = parse_section(TrainConfig, raw.get("train"), "train")
        data, _ = parse_section(DataConfig, raw.get("data"), "data")
        return cls(model=model, train=train, data=data, raw=raw, path=path)


def load_config(path: str | Path) -> RunConfig:
    """Load a YAML run config strictly. Raises :class:`ConfigError` with the offending key named."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    with p.open() as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a run config must be a mapping with model/train/data sections")
    return RunConfig.from_dict(raw, path=str(p))
