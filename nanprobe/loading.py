"""Reading what the user points nanprobe at: checkpoints, models, batches, run configs.

Safe by default: ``torch.load(weights_only=True)`` unless the caller trusts pickles. Every failure is an
:class:`~nanprobe.errors.InputError` whose message names the problem and what to do. Nothing here ever writes.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanprobe.batches import ModelCall
from nanprobe.errors import InputError

__all__ = [
    "CHECKPOINT_FORMAT",
    "STATE_DICT_KEYS",
    "Loaded",
    "batches_from_factory",
    "check_batches_fit",
    "load_batches",
    "load_checkpoint",
    "load_run_config",
    "parse_device",
    "read_torch_file",
    "resolve_callable",
]

STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model")
CHECKPOINT_FORMAT = 1  # the "nanprobe" section's format this module reads
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_SHOWN_KEYS = 5


@dataclass
class Loaded:
    """A checkpoint turned into a model on its device, plus what it recorded for the diagnosis."""

    model: nn.Module
    path: Path
    kind: str  # "nanprobe" (our convention) | "state_dict" | "module" (a pickled nn.Module)
    factory: str | None = None
    config: dict[str, Any] | None = None  # constructor kwargs
    run_config: dict[str, Any] | None = None  # the whole run config, for the config audit
    data_spec: dict[str, Any] | None = None  # {"factory": "pkg.mod:fn", "kwargs": {...}}
    mode: str | None = None  # the mode the checkpoint says the failure happened in
    ignored_keys: list[str] = field(default_factory=list)  # e.g. "num_batches_tracked" differences, tolerated

    def describe(self) -> str:
        """One phrase for people: where the model came from."""
        if self.kind == "module":
            return "a pickled nn.Module"
        how = "recorded factory" if self.kind == "nanprobe" else "--model"
        return f"state dict + {how} {self.factory}{' with its config' if self.config else ''}"


# ----------------------------------------------------------------------------------------------------- files

def _check_readable(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise InputError(f"{what} {str(p)!r} is a directory, not a file saved with torch.save")
    if not os.access(p, os.R_OK):
        raise InputError(f"{what} {str(p)!r} is not readable; check its permissions")
    return p


def _unsafe_globals(path: Path) -> list[str]:
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is not None:
        try:
            return list(finder(str(path)))
        except Exception:
            pass
    return []


def read_torch_file(path: str | Path, *, trust_pickle: bool = False, what: str = "checkpoint") -> Any:
    """``torch.load`` onto the CPU with every failure turned into an InputError naming the cause."""
    p = _check_readable(path, what)
    with p.open("rb") as f:
        head = f.read(4)
    if not head:
        raise InputError(f"{what} {str(p)!r} is empty (0 bytes); it was probably not saved completely")
    if head != _ZIP_MAGIC and head[0] != _PICKLE_PROTO:
        raise InputError(f"{what} {str(p)!r} is not a PyTorch file (expected something saved with torch.save)")
    try:
        return torch.load(p, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:
        text = str(e)
        if not trust_pickle and "Weights only load failed" in text:
            names = _unsafe_globals(p) or re.findall(r"Unsupported global: GLOBAL (\S+)", text)
            names = sorted(set(names), key=lambda n: (n.startswith(("torch.", "builtins.", "collections.")), n))
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise InputError(
                f"refused to unpickle {what} {str(p)!r}: it contains pickled Python objects"
                f"{f' ({shown})' if shown else ''} and unpickling can run arbitrary code; "
                "rerun with --trust-pickle if you trust the file"
            ) from e
        if isinstance(e, (ModuleNotFoundError, AttributeError)) and trust_pickle:
            raise InputError(f"{what} {str(p)!r} pickles a class nanprobe cannot import ({_first_line(text)}); "
                             "run nanprobe where the model's code is importable") from e
        if isinstance(e, EOFError):
            raise InputError(f"{what} {str(p)!r} is truncated (it ends in the middle); save it again") from e
        # The header said torch file, so anything else means the bytes are damaged.
        raise InputError(f"{what} {str(p)!r} is truncated or corrupt (torch.load: {type(e).__name__}: "
                         f"{_first_sentence(text)}); save it again or copy it again") from e


def _first_sentence(text: str) -> str:
    line = _first_line(text)
    return line.split(". ", 1)[0]


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    return line[:200]


# ------------------------------------------------------------------------------------------------- callables

def resolve_callable(spec: str, *, what: str, flag: str) -> Callable[..., Any]:
    """``pkg.module:callable`` (a dotted attribute path after the colon is allowed). The current directory is
    importable, as with ``python -m``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"{flag} {spec!r} is not MODULE:CALLABLE (for example mypkg.models:build_model)")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
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
                         f"{_first_line(str(e))}") from e


# ----------------------------------------------------------------------------------------------- checkpoints

def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _find_state(ckpt: Any) -> tuple[Any, str]:
    """(state dict or module, where it was found)."""
    if isinstance(ckpt, nn.Module):
        return ckpt, "<module>"
    if not isinstance(ckpt, Mapping):
        raise InputError(f"the checkpoint holds a {type(ckpt).__name__}; expected a dict with a state dict under "
                         f"{' / '.join(STATE_DICT_KEYS)}, a bare state dict, or (with --trust-pickle) an nn.Module")
    for key in STATE_DICT_KEYS:
        value = ckpt.get(key)
        if isinstance(value, nn.Module) or _is_state_dict(value):
            return value, key
    if _is_state_dict(ckpt):
        return ckpt, "<bare>"
    keys = ", ".join(sorted(str(k) for k in ckpt)[:8])
    raise InputError(f"the checkpoint has no state dict: none of {', '.join(STATE_DICT_KEYS)} holds tensors "
                     f"(top-level keys: {keys}); save model.state_dict() under one of them")


def _plain_dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _strip_prefix(state: Mapping[str, torch.Tensor], model: nn.Module) -> Mapping[str, torch.Tensor]:
    """A DDP/compiled checkpoint's ``module.``/``_orig_mod.`` prefix, when the model has none."""
    own = set(model.state_dict())
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> list[str]:
    state = _strip_prefix(state, model)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        sizes = re.findall(r"size mismatch for ([\w.]+)", str(e))
        detail = f"size mismatch for {', '.join(sizes[:_SHOWN_KEYS])}" if sizes else _first_line(str(e))
        raise InputError(f"the state dict does not fit the model built by {source}: {detail}; "
                         "check the model config (the checkpoint's 'config' dict is passed to it)") from e
    tolerated = [k for k in [*result.missing_keys, *result.unexpected_keys] if k.endswith("num_batches_tracked")]
    missing = [k for k in result.missing_keys if k not in tolerated]
    unexpected = [k for k in result.unexpected_keys if k not in tolerated]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_list(unexpected)}")
        raise InputError(f"the state dict does not match the model built by {source}: {'; '.join(parts)}; "
                         "check --model and the checkpoint's config")
    return tolerated


def _list(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return f"[{shown}{f', ... (+{len(keys) - _SHOWN_KEYS} more)' if len(keys) > _SHOWN_KEYS else ''}]"


def load_checkpoint(path: str | Path, *, model_spec: str | None = None, trust_pickle: bool = False,
                    device: torch.device | str = "cpu") -> Loaded:
    """Build the model a checkpoint describes and load its weights (see the contract and the checkpoint
    convention in nanprobe's README). ``model_spec`` (``--model``) overrides a recorded factory."""
    ckpt = read_torch_file(path, trust_pickle=trust_pickle)
    meta = _plain_dict(ckpt.get("nanprobe")) if isinstance(ckpt, Mapping) else None
    meta = meta or {}
    version = meta.get("format", 1)
    if isinstance(version, int) and version > CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint {str(path)!r} uses nanprobe checkpoint format {version}, newer than the "
                         f"{CHECKPOINT_FORMAT} this nanprobe reads; upgrade nanprobe")
    config = _plain_dict(ckpt.get("config")) if isinstance(ckpt, Mapping) else None
    state, where = _find_state(ckpt)
    factory = model_spec or meta.get("factory")
    tolerated: list[str] = []
    if isinstance(state, nn.Module):
        model, kind = state, "module"
        if model_spec:
            raise InputError("the checkpoint is a whole pickled nn.Module; --model is not needed, drop it")
    else:
        if not factory:
            raise InputError(f"checkpoint {str(path)!r} holds a state dict (under {where}) but does not say how to "
                             "build the model; pass --model MODULE:CALLABLE (called with **checkpoint['config'])")
        flag = "--model" if model_spec else "the checkpoint's nanprobe.factory"
        fn = resolve_callable(str(factory), what="model factory", flag=flag)
        model = _call_factory(fn, config or {}, what="model factory", spec=str(factory))
        if not isinstance(model, nn.Module):
            raise InputError(f"model factory {factory!r} returned a {type(model).__name__}, not an nn.Module")
        tolerated = _load_state(model, state, repr(str(factory)))
        kind = "nanprobe" if meta else "state_dict"
    run_config = _plain_dict(meta.get("run_config"))
    if run_config is None and isinstance(ckpt, Mapping):
        run_config = _plain_dict(ckpt.get("run_config"))
    mode = meta.get("mode")
    if mode is not None and mode not in ("eval", "train"):
        mode = None
    data = _plain_dict(meta.get("data"))
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as e:
        raise InputError(f"cannot move the model to device {str(device)!r}: {_first_line(str(e))}") from e
    return Loaded(model=model, path=Path(path), kind=kind, factory=str(factory) if factory else None,
                  config=config, run_config=run_config, data_spec=data, mode=mode, ignored_keys=tolerated)


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
                         f"{_first_line(str(e))}") from e
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
            raise InputError(f"device {text!r} is not usable here: {_first_line(str(e))}") from e
    return device


# ------------------------------------------------------------------------------------------------ run configs

def load_run_config(path: str | Path) -> dict[str, Any]:
    """``--config FILE``: a YAML or JSON mapping (the run config the config audit compares with the model)."""
    p = _check_readable(path, "config file")
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:
        raise InputError(f"config file {str(p)!r} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: "
                         f"{_first_line(str(e))}") from e
    if not isinstance(data, Mapping):
        raise InputError(f"config file {str(p)!r} holds a {type(data).__name__}; expected a mapping of settings")
    return dict(data)
