"""Reading what the user points nanprobe at: checkpoints, models, batches, run configs.

Safe by default: ``torch.load(weights_only=True)`` unless the caller trusts pickles. Every failure is an
:class:`~nanprobe.errors.InputError` whose message names the problem and what to do. Nothing here ever writes.

A checkpoint is a file saved with ``torch.save``, a ``.safetensors`` file or a ``save_pretrained`` folder
(:mod:`nanprobe.checkpoint_files`). Its tensors are memory-mapped, never read into a second copy, and the model
takes them over by assignment when that is provably the same as building it and copying them in
(:mod:`nanprobe.materialize`).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanprobe.batches import ModelCall
from nanprobe.checkpoint_files import (
    CONFIG_FILE,
    OPTIMIZER_FILE,
    OPTIMIZER_KEYS,
    STATE_DICT_KEYS,
    TRAINER_STATE_FILE,
    CheckpointData,
    check_readable,
    first_line,
    import_from_cwd,
    is_optimizer_state,
    is_state_dict,
    is_zip,
    read_checkpoint,
    read_json,
    read_torch_file,
)
from nanprobe.errors import InputError
from nanprobe.integrations.hf_checkpoints import (
    AUTO_MODEL,
    builder_for_class,
    builder_from_config,
    ignored_key_patterns,
    is_pretrained_class,
    is_transformers_config,
)
from nanprobe.materialize import fit

__all__ = [
    "CHECKPOINT_FORMAT",
    "STATE_DICT_KEYS",
    "CheckpointData",
    "Loaded",
    "batches_from_factory",
    "check_batches_fit",
    "import_from_cwd",
    "load_batches",
    "load_checkpoint",
    "load_run_config",
    "parse_device",
    "read_checkpoint",
    "read_torch_file",
    "resolve_callable",
]


CHECKPOINT_FORMAT = 1  # the "nanprobe" section's format this module reads
_SHOWN_KEYS = 5


@dataclass
class Loaded:
    """A checkpoint turned into a model on its device, plus what it recorded for the diagnosis."""

    model: nn.Module
    path: Path
    kind: str  # "nanprobe" (our convention) | "state_dict" | "transformers" (built from its config) | "module"
    factory: str | None = None  # MODULE:CALLABLE, or "transformers:GPT2LMHeadModel" for kind "transformers"
    config: dict[str, Any] | None = None  # constructor kwargs (config.json, for save_pretrained weights)
    run_config: dict[str, Any] | None = None  # the whole run config, for the config audit
    data_spec: dict[str, Any] | None = None  # {"factory": "pkg.mod:fn", "kwargs": {...}}
    mode: str | None = None  # the mode the checkpoint says the failure happened in
    ignored_keys: list[str] = field(default_factory=list)  # e.g. "num_batches_tracked" differences, tolerated
    format: str = "torch"  # "torch" (torch.save) | "safetensors"
    mapped: bool = False  # the weights are the checkpoint file's memory-mapped tensors, not copies
    optimizer_state: dict[str, Any] | None = None  # an optimizer's state_dict() saved with it (memory-mapped)
    history: list[dict[str, Any]] | None = None  # the run's logged steps (a Trainer folder's log_history)

    def describe(self) -> str:
        """One phrase for people: where the model came from."""
        if self.kind == "module":
            return "a pickled nn.Module"
        weights = "safetensors state dict" if self.format == "safetensors" else "state dict"
        if self.kind == "transformers":
            return f"{weights} + {self.factory} built from its config"
        how = "recorded factory" if self.kind == "nanprobe" else "--model"
        return f"{weights} + {how} {self.factory}{' with its config' if self.config else ''}"


# ------------------------------------------------------------------------------------------------- callables

def resolve_callable(spec: str, *, what: str, flag: str) -> Callable[..., Any]:
    """``pkg.module:callable`` (a dotted attribute path after the colon is allowed). The current directory is
    importable, as with ``python -m``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"{flag} {spec!r} is not MODULE:CALLABLE (for example mypkg.models:build_model)")
    import_from_cwd()
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"cannot import {what} module {module_name!r} from {flag} {spec!r}: {e}; "
                         "install it or run nanprobe from the directory that contains it") from e
    except Exception as e:
        raise InputError(f"importing {what} module {module_name!r} raised {type(e).__name__}: {e}") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"{what} module {module_name!r} has no attribute {attr!r} ({flag} {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"{flag} {spec!r} names a {type(obj).__name__}, not a callable")
    return obj


def _call_factory(fn: Callable[..., Any], kwargs: Mapping[str, Any], *, what: str, spec: str) -> Any:
    try:
        return fn(**kwargs)
    except Exception as e:
        shown = f" with {sorted(kwargs)}" if kwargs else " with no arguments"
        raise InputError(f"{what} {spec!r} raised {type(e).__name__} when called{shown}: "
                         f"{first_line(str(e))}") from e


# ----------------------------------------------------------------------------------------------- checkpoints

def _find_state(ckpt: Any) -> tuple[Any, str]:
    """(state dict or module, where it was found)."""
    if isinstance(ckpt, nn.Module):
        return ckpt, "<module>"
    if not isinstance(ckpt, Mapping):
        raise InputError(f"the checkpoint holds a {type(ckpt).__name__}; expected a dict with a state dict under "
                         f"{' / '.join(STATE_DICT_KEYS)}, a bare state dict, or (with --trust-pickle) an nn.Module")
    for key in STATE_DICT_KEYS:
        value = ckpt.get(key)
        if isinstance(value, nn.Module) or is_state_dict(value):
            return value, key
    if is_state_dict(ckpt):
        return ckpt, "<bare>"
    keys = ", ".join(sorted(str(k) for k in ckpt)[:8])
    raise InputError(f"the checkpoint has no state dict: none of {', '.join(STATE_DICT_KEYS)} holds tensors "
                     f"(top-level keys: {keys}); save model.state_dict() under one of them")


def _find_optimizer_state(ckpt: Any, path: Path, trust_pickle: bool) -> dict[str, Any] | None:
    """An optimizer's ``state_dict()`` saved with the weights (under :data:`OPTIMIZER_KEYS`, or as
    :data:`OPTIMIZER_FILE` in a checkpoint folder), for the verdict on a non-finite parameter; None if absent
    or unreadable (it is never needed to run the model)."""
    found: list[Any] = [ckpt.get(key) for key in OPTIMIZER_KEYS] if isinstance(ckpt, Mapping) else []
    if path.is_dir() and (path / OPTIMIZER_FILE).is_file():
        with contextlib.suppress(InputError):
            found.append(read_torch_file(path / OPTIMIZER_FILE, trust_pickle=trust_pickle, what="optimizer state",
                                         mmap=True))
    for value in found:
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        if is_optimizer_state(value):
            return dict(value)
    return None


_LOGGED = {"loss": "loss", "grad_norm": "grad_norm", "learning_rate": "lr"}  # log_history key -> history key


def _trainer_history(path: Path) -> list[dict[str, Any]] | None:
    """A Hugging Face Trainer checkpoint folder's ``log_history`` as the monitor's history rows (``step``,
    ``loss``, ``grad_norm``, ``lr``): the run's record, so a diverged run can be told from one bad batch. None
    without one, or when it cannot be read (it is never needed to run the model)."""
    file = path / TRAINER_STATE_FILE
    if not path.is_dir() or not file.is_file():
        return None
    try:
        logged = read_json(file, "trainer state").get("log_history")
    except InputError:
        return None
    rows: dict[int, dict[str, Any]] = {}
    for entry in logged if isinstance(logged, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("step"), int):
            values = {ours: float(entry[theirs]) for theirs, ours in _LOGGED.items()
                      if isinstance(entry.get(theirs), (int, float)) and not isinstance(entry.get(theirs), bool)}
            if values:
                rows.setdefault(entry["step"], {"step": entry["step"]}).update(values)
    return [rows[k] for k in sorted(rows)] or None


def _plain_dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _check_keys(missing: list[str], unexpected: list[str], model: nn.Module, source: str, hint: str) -> list[str]:
    """The tolerated differences (``num_batches_tracked``, keys a transformers model declares harmless); any other
    missing or unexpected key is an InputError."""
    ignore_missing, ignore_unexpected = ignored_key_patterns(model)

    def tolerated(key: str, patterns: list[str]) -> bool:
        return key.endswith("num_batches_tracked") or any(re.search(p, key) for p in patterns)

    ignored = [k for k in missing if tolerated(k, ignore_missing)]
    ignored += [k for k in unexpected if tolerated(k, ignore_unexpected)]
    missing = [k for k in missing if k not in ignored]
    unexpected = [k for k in unexpected if k not in ignored]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_list(unexpected)}")
        raise InputError(f"the state dict does not match the model built by {source}: {'; '.join(parts)}; {hint}")
    return ignored


def _list(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return f"[{shown}{f', ... (+{len(keys) - _SHOWN_KEYS} more)' if len(keys) > _SHOWN_KEYS else ''}]"


def _factory_model(fn: Callable[..., Any], config: Mapping[str, Any], spec: str) -> nn.Module:
    model = _call_factory(fn, config, what="model factory", spec=spec)
    if not isinstance(model, nn.Module):
        raise InputError(f"model factory {spec!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def _transformers_model(build: Callable[[], nn.Module], name: str) -> nn.Module:
    try:
        return build()
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"building the model with {name} raised {type(e).__name__}: {first_line(str(e))}; "
                         "check the checkpoint's config") from e


def _builder(path: str | Path, data: CheckpointData, *, factory: str | None, from_flag: bool,
             config: dict[str, Any] | None, where: str) -> tuple[Callable[[], nn.Module], str]:
    """How to build the model, and what builds it: the factory (--model or recorded), else transformers from the
    checkpoint's config.json or transformers config."""
    if factory:
        fn = resolve_callable(factory, what="model factory", flag="--model" if from_flag else
                              "the checkpoint's nanprobe.factory")
        if is_pretrained_class(fn):
            return partial(_transformers_model, builder_for_class(fn, config, spec=factory), factory), factory
        return partial(_factory_model, fn, config or {}, factory), factory
    if config is not None and (data.config_json is not None or is_transformers_config(config)):
        source = f"{CONFIG_FILE} of {str(path)!r}" if data.config_json is not None else f"the config of {str(path)!r}"
        build, name = builder_from_config(config, where=source)
        return partial(_transformers_model, build, name), name
    if data.weights.layout == "pretrained":
        raise InputError(f"checkpoint {str(path)!r} holds {data.weights.format} weights with no {CONFIG_FILE} beside "
                         "them, so nanprobe cannot tell how to build the model; pass --model MODULE:CALLABLE, or "
                         f"put the model's {CONFIG_FILE} (save_pretrained writes it) beside them")
    raise InputError(f"checkpoint {str(path)!r} holds a state dict (under {where}) but does not say how to build the "
                     "model; pass --model MODULE:CALLABLE (called with **checkpoint['config'])")


def _build_and_load(build: Callable[[], nn.Module], state: Mapping[str, torch.Tensor],
                    factory: str) -> tuple[nn.Module, list[str], str]:
    source = repr(factory)
    try:
        fitted = fit(build, state)
    except RuntimeError as e:
        sizes = re.findall(r"size mismatch for ([\w.]+)", str(e))
        detail = f"size mismatch for {', '.join(sizes[:_SHOWN_KEYS])}" if sizes else first_line(str(e))
        raise InputError(f"the state dict does not fit the model built by {source}: {detail}; "
                         "check the model config (the checkpoint's 'config' dict is passed to it)") from e
    hint = ("the config names no model class this transformers has, so its base model was built; pass --model "
            "transformers:CLASS naming the checkpoint's class" if factory == AUTO_MODEL
            else "check --model and the checkpoint's config")
    ignored = _check_keys(fitted.missing, fitted.unexpected, fitted.model, source, hint)
    return fitted.model, ignored, fitted.how


def load_checkpoint(path: str | Path, *, model_spec: str | None = None, trust_pickle: bool = False,
                    device: torch.device | str = "cpu") -> Loaded:
    """Build the model a checkpoint describes and load its weights (see the contract and the checkpoint
    convention in nanprobe's README). ``model_spec`` (``--model``) overrides a recorded factory. The weights are
    memory-mapped and, where provably the same, taken over by the model rather than copied (``Loaded.mapped``)."""
    data = read_checkpoint(path, trust_pickle=trust_pickle)
    ckpt = data.obj
    meta = _plain_dict(ckpt.get("nanprobe")) if isinstance(ckpt, Mapping) else None
    meta = meta or {}
    version = meta.get("format", 1)
    if isinstance(version, int) and version > CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint {str(path)!r} uses nanprobe checkpoint format {version}, newer than the "
                         f"{CHECKPOINT_FORMAT} this nanprobe reads; upgrade nanprobe")
    config = data.config_json
    run_config = _plain_dict(meta.get("run_config"))
    if isinstance(ckpt, Mapping):
        config = config if config is not None else _plain_dict(ckpt.get("config"))
        run_config = run_config if run_config is not None else _plain_dict(ckpt.get("run_config"))
    state, where = _find_state(ckpt)
    factory = model_spec or meta.get("factory")
    tolerated: list[str] = []
    mapped = data.weights.format == "safetensors" or all(is_zip(f) for f in data.weights.files)
    if isinstance(state, nn.Module):
        model, kind = state, "module"
        if model_spec:
            raise InputError("the checkpoint is a whole pickled nn.Module; --model is not needed, drop it")
    else:
        kind = ("nanprobe" if meta else "state_dict") if factory else "transformers"
        build, factory = _builder(path, data, factory=str(factory) if factory else None, from_flag=bool(model_spec),
                                  config=config, where=where)
        model, tolerated, how = _build_and_load(build, state, factory)
        mapped = mapped and how != "copy"
    fmt = data.weights.format
    optimizer_state = _find_optimizer_state(ckpt, Path(path), trust_pickle)
    del ckpt, state, data  # the model holds what it needs of the checkpoint; the rest is released here
    mode = meta.get("mode")
    if mode is not None and mode not in ("eval", "train"):
        mode = None
    data_spec = _plain_dict(meta.get("data"))
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as e:
        raise InputError(f"cannot move the model to device {str(device)!r}: {first_line(str(e))}") from e
    return Loaded(model=model, path=Path(path), kind=kind, factory=str(factory) if factory else None,
                  config=config, run_config=run_config, data_spec=data_spec, mode=mode, ignored_keys=tolerated,
                  format=fmt, mapped=mapped, optimizer_state=optimizer_state, history=_trainer_history(Path(path)))


# ---------------------------------------------------------------------------------------------------- batches

def _as_batch_list(obj: Any, source: str) -> list[Any]:
    """A list/tuple is a list of batches; a single tensor, dict or ModelCall is taken as one batch."""
    if isinstance(obj, (torch.Tensor, Mapping, ModelCall)):
        return [obj]
    if isinstance(obj, (list, tuple)):
        batches = list(obj)
    else:
        raise InputError(f"{source} holds a {type(obj).__name__}; expected a list of batches (tensors, tuples or "
                         "dicts of tensors)")
    if not batches:
        raise InputError(f"{source} holds an empty list of batches; save at least one batch")
    return batches


def load_batches(path: str | Path, *, trust_pickle: bool = False) -> list[Any]:
    """``--batches FILE``: a ``torch.save``d list (or tuple) of batches. A file holding a single tensor or dict
    is taken as one batch. Loaded with ``weights_only=True`` unless ``trust_pickle``."""
    obj = read_torch_file(path, trust_pickle=trust_pickle, what="batches file")
    return _as_batch_list(obj, f"batches file {str(path)!r}")


def batches_from_factory(spec: str, kwargs: Mapping[str, Any] | None = None, *, flag: str = "--data",
                         limit: int | None = None) -> list[Any]:
    """``MODULE:CALLABLE`` called with ``kwargs``, returning an iterable of batches; the first ``limit`` are
    taken (so an endless loader is fine)."""
    fn = resolve_callable(spec, what="data factory", flag=flag)
    produced = _call_factory(fn, dict(kwargs or {}), what="data factory", spec=spec)
    if isinstance(produced, (torch.Tensor, Mapping, ModelCall)):
        produced = [produced]
    if not isinstance(produced, Iterable):
        raise InputError(f"data factory {spec!r} returned a {type(produced).__name__}, not an iterable of batches")
    try:
        batches = list(itertools.islice(produced, limit))
    except Exception as e:
        raise InputError(f"iterating the batches of data factory {spec!r} raised {type(e).__name__}: "
                         f"{first_line(str(e))}") from e
    if not batches:
        raise InputError(f"data factory {spec!r} produced no batches")
    return batches


def _describe_batch(batch: Any) -> str:
    if isinstance(batch, torch.Tensor):
        return f"a tensor of shape {tuple(batch.shape)}"
    if isinstance(batch, Mapping):
        return f"a dict with keys {sorted(map(str, batch))}"
    if isinstance(batch, (list, tuple)):
        return f"a {type(batch).__name__} of {len(batch)}"
    return f"a {type(batch).__name__}"


def _short_signature(signature: inspect.Signature) -> str:
    """``(x, mask=..., *args, **kwargs)``: names only, no annotations."""
    parts = []
    for param in signature.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            parts.append(f"*{param.name}")
        elif param.kind is param.VAR_KEYWORD:
            parts.append(f"**{param.name}")
        else:
            parts.append(param.name if param.default is param.empty else f"{param.name}=...")
    return f"({', '.join(parts)})"


def check_batches_fit(model: nn.Module, batches: list[Any]) -> None:
    """Bind each batch to ``model.forward``'s signature the way it will be called, before anything runs."""
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return
    for index, batch in enumerate(batches):
        if isinstance(batch, ModelCall):
            args, kwargs = tuple(batch.args), dict(batch.kwargs)
        elif isinstance(batch, Mapping):
            args, kwargs = (), dict(batch)
        elif isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
            args, kwargs = tuple(batch), {}
        else:
            args, kwargs = (batch,), {}
        try:
            signature.bind(*args, **kwargs)
        except TypeError as e:
            raise InputError(
                f"batch {index} ({_describe_batch(batch)}) does not fit {type(model).__name__}.forward"
                f"{_short_signature(signature)}: "
                f"{e}; a dict batch is called as model(**batch), a tuple/list as model(*batch), a tensor as "
                "model(batch) (a file holding one batch must hold a list of it)"
            ) from e


def parse_device(text: str) -> torch.device:
    """A torch device that exists here; an unknown or unavailable one is an InputError."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as e:
        raise InputError(f"unknown device {text!r} (try cpu, cuda, cuda:1 or mps)") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {text!r} is not available: this torch has no usable CUDA; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {text!r} does not exist: {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {text!r} is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        try:
            torch.empty(0, device=device)
        except Exception as e:
            raise InputError(f"device {text!r} is not usable here: {first_line(str(e))}") from e
    return device


# ------------------------------------------------------------------------------------------------ run configs

def load_run_config(path: str | Path) -> dict[str, Any]:
    """``--config FILE``: a YAML or JSON mapping (the run config the config audit compares with the model)."""
    p = check_readable(path, "config file")
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:
        raise InputError(f"config file {str(p)!r} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: "
                         f"{first_line(str(e))}") from e
    if not isinstance(data, Mapping):
        raise InputError(f"config file {str(p)!r} holds a {type(data).__name__}; expected a mapping of settings")
    return dict(data)
