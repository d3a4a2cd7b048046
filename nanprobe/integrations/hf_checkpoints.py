"""transformers glue for loading: how to build a model from a transformers config, and which state-dict keys a
``PreTrainedModel`` declares harmless. transformers is imported only when a config needs building."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from torch import nn

from nanprobe.errors import InputError

__all__ = ["AUTO_MODEL", "builder_for_class", "builder_from_config", "ignored_key_patterns", "is_pretrained_class",
           "is_transformers_config"]

Builder = Callable[[], nn.Module]
AUTO_MODEL = "transformers:AutoModel"  # what builds a config that names no class this transformers has
_FLAG_HINT = "or pass --model MODULE:CALLABLE"


def _transformers(why: str) -> Any:
    try:
        import transformers
    except ImportError as e:
        raise InputError(f"{why} needs the transformers package, which is not installed; pip install transformers, "
                         f"{_FLAG_HINT}") from e
    return transformers


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


def is_pretrained_class(obj: Any) -> bool:
    """Whether ``obj`` is a ``transformers.PreTrainedModel`` subclass. Never imports transformers: a subclass can
    only exist once transformers' modeling code is imported."""
    modeling = sys.modules.get("transformers.modeling_utils")
    return modeling is not None and isinstance(obj, type) and issubclass(obj, modeling.PreTrainedModel)


def is_transformers_config(config: Any) -> bool:
    """Whether a checkpoint's config dict was written by transformers (``PretrainedConfig.to_dict()``)."""
    return (isinstance(config, Mapping) and isinstance(config.get("model_type"), str)
            and "transformers_version" in config)


def _instantiate(cls: Any, config: Any) -> nn.Module:
    # _from_config is what the Auto classes' from_config use: it applies the config's dtype and attention choice.
    make = getattr(cls, "_from_config", None)
    return make(config) if make is not None else cls(config)


def builder_for_class(cls: Any, config: Mapping[str, Any] | None, *, spec: str) -> Builder:
    """``--model`` naming a PreTrainedModel class: the checkpoint's config dict through ``cls.config_class``."""
    config_class = cls.config_class
    try:
        built = config_class(**dict(config or {}))
    except Exception as e:
        raise InputError(f"{config_class.__name__} rejected the checkpoint's config ({type(e).__name__}: "
                         f"{_first_line(e)}); check --model {spec}") from e
    return partial(_instantiate, cls, built)


def builder_from_config(config: Mapping[str, Any], *, where: str) -> tuple[Builder, str]:
    """A builder for the model a transformers config describes, and its name (``transformers:GPT2LMHeadModel``):
    the first of ``config["architectures"]`` that this transformers has, else ``AutoModel`` for its model_type."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise InputError(f"{where} has no model_type, so nanprobe cannot tell which transformers model it is; "
                         f"{_FLAG_HINT}")
    tf = _transformers(f"building the model from {where}")
    settings = {k: v for k, v in config.items() if k != "model_type"}
    try:
        built = tf.AutoConfig.for_model(model_type, **settings)
    except ValueError as e:
        if "Unrecognized model" not in str(e):
            raise InputError(f"transformers rejected {where} ({_first_line(e)}); {_FLAG_HINT}") from e
        raise InputError(f"{where} is for model_type {model_type!r}, which transformers {tf.__version__} does not "
                         f"know; upgrade transformers, {_FLAG_HINT}") from e
    except Exception as e:
        raise InputError(f"transformers rejected {where} ({type(e).__name__}: {_first_line(e)}); {_FLAG_HINT}") from e
    architectures = config.get("architectures") or []
    for name in architectures if isinstance(architectures, list) else []:
        try:
            cls = getattr(tf, str(name), None)
        except Exception:  # a lazily imported class whose optional dependency is missing
            cls = None
        if is_pretrained_class(cls):
            return partial(_instantiate, cls, built), f"transformers:{name}"
    if type(built) not in tf.MODEL_MAPPING:
        raise InputError(f"transformers {tf.__version__} has none of the architectures {architectures} of {where} "
                         f"and no AutoModel for model_type {model_type!r}; upgrade transformers, {_FLAG_HINT}")
    return partial(tf.AutoModel.from_config, built), AUTO_MODEL


def ignored_key_patterns(model: nn.Module) -> tuple[list[str], list[str]]:
    """(missing, unexpected): regexes of state-dict keys a PreTrainedModel declares harmless, e.g. GPT-2's
    ``attn.bias`` causal masks that old checkpoints still carry."""
    if not is_pretrained_class(type(model)):
        return [], []
    missing = getattr(model, "_keys_to_ignore_on_load_missing", None) or []
    unexpected = getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []
    return [str(p) for p in missing], [str(p) for p in unexpected]
