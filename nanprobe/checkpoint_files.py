"""Checkpoint files on disk: what a path is (a file saved with ``torch.save``, a ``.safetensors`` file, or a
``save_pretrained`` folder with ``config.json`` beside ``model.safetensors``, ``pytorch_model.bin`` or a sharded
``*.index.json``) and reading it with its tensors memory-mapped: a tensor read here is a copy-on-write view of the
file, so nothing is read until it is used and nothing is ever written back.

Safe by default: ``torch.load(weights_only=True)`` unless the caller trusts pickles; a trusted pickle's classes
are imported from the current directory too. Every failure is an InputError naming the cause and what to do.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nanprobe.errors import InputError

__all__ = ["CONFIG_FILE", "OPTIMIZER_FILE", "OPTIMIZER_KEYS", "STATE_DICT_KEYS", "TRAINER_STATE_FILE",
           "WEIGHT_FILES", "CheckpointData", "WeightFiles", "check_readable", "first_line", "import_from_cwd",
           "is_optimizer_state", "is_state_dict", "is_zip", "locate", "read_checkpoint", "read_json",
           "read_safetensors", "read_torch_file"]

CONFIG_FILE = "config.json"
# Where a training checkpoint keeps what: the model's state dict, an optimizer's state_dict() (Lightning: a list
# of them under "optimizer_states"), and the optimizer file beside the weights in a Hugging Face Trainer folder.
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model")
OPTIMIZER_KEYS = ("optimizer_state_dict", "optimizer", "optim", "optimizer_state", "optimizer_states")
OPTIMIZER_FILE = "optimizer.pt"
TRAINER_STATE_FILE = "trainer_state.json"  # a Hugging Face Trainer checkpoint's state, with its log_history
# What save_pretrained writes, in the order a folder's weights are looked for (safetensors first, as transformers).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip format; the legacy format starts with a pickle protocol byte
_PICKLE_PROTO = 0x80
_SAFETENSORS_HEADER_OPEN = b"{"  # after the 8-byte header length
_HINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


@dataclass(frozen=True)
class WeightFiles:
    """What CHECKPOINT points at."""

    path: Path  # as given
    format: str  # "torch" (torch.save) | "safetensors"
    files: tuple[Path, ...]  # one file, or a sharded checkpoint's shards in index order
    config: Path | None  # config.json of a save_pretrained layout, when there is one
    layout: str  # "file" (a file saved by the user) | "pretrained" (save_pretrained weights, bare state dicts)


def _sniff(path: Path) -> str | None:
    """"torch", "safetensors", or None (neither), from the first bytes."""
    with path.open("rb") as f:
        head = f.read(9)
    if head[:4] == _ZIP_MAGIC or (head and head[0] == _PICKLE_PROTO):
        return "torch"
    # safetensors: an 8-byte little-endian header length that fits in the file, then the JSON header.
    header = int.from_bytes(head[:8], "little")
    if len(head) == 9 and head[8:9] == _SAFETENSORS_HEADER_OPEN and 0 < header <= path.stat().st_size - 8:
        return "safetensors"
    return None


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object, or an InputError saying what is wrong with the file."""
    check_readable(path, what)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{what} {str(path)!r} is not valid JSON ({e}); save it again") from e
    if not isinstance(data, dict):
        raise InputError(f"{what} {str(path)!r} holds a {type(data).__name__}; expected a JSON object")
    return data


def _shards(index: Path) -> tuple[Path, ...]:
    """The shard files a ``*.index.json`` names, in order of first appearance, each checked to exist."""
    weight_map = read_json(index, "shard index").get("weight_map")
    if not isinstance(weight_map, Mapping) or not weight_map:
        raise InputError(f"shard index {str(index)!r} has no weight_map; save the model again with save_pretrained")
    names = list(dict.fromkeys(str(v) for v in weight_map.values()))
    shards = tuple(index.parent / name for name in names)
    for shard in shards:
        if not shard.is_file():
            raise InputError(f"shard {shard.name!r} listed in {str(index)!r} is missing; copy the whole folder")
    return shards


def _from_index(index: Path, given: Path, config: Path | None) -> WeightFiles:
    fmt = "safetensors" if index.name.endswith(".safetensors.index.json") else "torch"
    return WeightFiles(path=given, format=fmt, files=_shards(index), config=config, layout="pretrained")


def _candidates(folder: Path) -> str:
    """Up to three entries of ``folder`` that look like checkpoints, as a hint for the error message."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return ""
    found = [e.name + ("/" if e.is_dir() else "") for e in entries
             if e.suffix in _HINT_SUFFIXES or (e.is_dir() and (e / CONFIG_FILE).is_file())]
    return f" (it holds {', '.join(found[:3])}{', ...' if len(found) > 3 else ''})" if found else ""


def _folder(folder: Path) -> WeightFiles:
    config = folder / CONFIG_FILE
    has_config = config.is_file()
    for name in WEIGHT_FILES:
        weights = folder / name
        if not weights.is_file():
            continue
        if name.endswith(".index.json"):
            return _from_index(weights, folder, config if has_config else None)
        fmt = "safetensors" if name.endswith(".safetensors") else "torch"
        return WeightFiles(path=folder, format=fmt, files=(weights,), config=config if has_config else None,
                           layout="pretrained")
    expected = ", ".join(WEIGHT_FILES)
    if has_config:
        raise InputError(f"checkpoint {str(folder)!r} has a {CONFIG_FILE} but no weights (none of {expected}); "
                         "save the model with save_pretrained, or point at the weights file")
    raise InputError(f"checkpoint {str(folder)!r} is a directory with no {CONFIG_FILE} and no weights (none of "
                     f"{expected}){_candidates(folder)}; point at a file saved with torch.save, a .safetensors "
                     "file or a save_pretrained folder")


def locate(path: str | Path, what: str = "checkpoint") -> WeightFiles:
    """What ``path`` is and which files hold its weights. Every problem is an InputError naming what to do."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {str(p)!r} does not exist; check the path")
    if p.is_dir():
        return _folder(p)
    check_readable(p, what)
    if p.stat().st_size == 0:
        raise InputError(f"{what} {str(p)!r} is empty (0 bytes); it was probably not saved completely")
    if p.name.endswith(".index.json"):
        beside = p.parent / CONFIG_FILE
        return _from_index(p, p, beside if beside.is_file() else None)
    fmt = _sniff(p)
    if fmt is None:
        if p.suffix == ".safetensors":
            raise InputError(f"{what} {str(p)!r} is not a safetensors file (its header is not one); save it again")
        raise InputError(f"{what} {str(p)!r} is not a PyTorch file (expected something saved with torch.save, a "
                         ".safetensors file or a save_pretrained folder)")
    beside = p.parent / CONFIG_FILE
    # A .safetensors file is bare weights: the config.json beside it (if any) says how to build the model. A torch
    # file carries its own config, except save_pretrained's pytorch_model.bin, which is bare weights as well.
    pretrained = fmt == "safetensors" or p.name == "pytorch_model.bin"
    return WeightFiles(path=p, format=fmt, files=(p,), config=beside if pretrained and beside.is_file() else None,
                       layout="pretrained" if pretrained else "file")


def read_safetensors(files: tuple[Path, ...]) -> dict[str, torch.Tensor]:
    """Every tensor of one or more safetensors files, memory-mapped (copy-on-write), as one state dict."""
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as e:
        raise InputError("reading .safetensors weights needs the safetensors package, which is not installed; "
                         "pip install safetensors") from e
    state: dict[str, torch.Tensor] = {}
    for file in files:
        check_readable(file, "safetensors file")
        try:
            state.update(load_file(file, device="cpu"))
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"safetensors file {str(file)!r} is truncated or corrupt ({e}); save it again or "
                             "copy it again") from e
    return state


# ------------------------------------------------------------------------------------------------ torch files

def check_readable(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or an InputError if it is missing, a directory or unreadable."""
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


def is_zip(path: Path) -> bool:
    """Whether a torch file is in the zip format (which ``torch.load(mmap=True)`` can map)."""
    with path.open("rb") as f:
        return f.read(4) == _ZIP_MAGIC


def import_from_cwd() -> None:
    """Make the current directory importable, as ``python -m`` does, for the rest of the process: model and data
    factories and the classes of trusted pickles are looked up there. Appended, so it never shadows an installed
    package."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
        importlib.invalidate_caches()


def read_torch_file(path: str | Path, *, trust_pickle: bool = False, what: str = "checkpoint",
                    mmap: bool = False) -> Any:
    """``torch.load`` onto the CPU with every failure turned into an InputError naming the cause. ``mmap``: map the
    tensors from the file (copy-on-write) instead of reading them, when the file is in the zip format that allows
    it (a legacy file is read normally). With ``trust_pickle`` the current directory is importable."""
    p = check_readable(path, what)
    with p.open("rb") as f:
        head = f.read(4)
    if not head:
        raise InputError(f"{what} {str(p)!r} is empty (0 bytes); it was probably not saved completely")
    if head != _ZIP_MAGIC and head[0] != _PICKLE_PROTO:
        raise InputError(f"{what} {str(p)!r} is not a PyTorch file (expected something saved with torch.save)")
    if trust_pickle:
        import_from_cwd()
    try:
        return torch.load(p, map_location="cpu", weights_only=not trust_pickle, mmap=mmap and head == _ZIP_MAGIC)
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
            raise InputError(f"{what} {str(p)!r} pickles a class nanprobe cannot import ({first_line(text)}); "
                             "run nanprobe from the directory that holds the model's code, or put that code on "
                             "PYTHONPATH") from e
        if isinstance(e, EOFError):
            raise InputError(f"{what} {str(p)!r} is truncated (it ends in the middle); save it again") from e
        # The header said torch file, so anything else means the bytes are damaged.
        raise InputError(f"{what} {str(p)!r} is truncated or corrupt (torch.load: {type(e).__name__}: "
                         f"{_first_sentence(text)}); save it again or copy it again") from e


def _first_sentence(text: str) -> str:
    line = first_line(text)
    return line.split(". ", 1)[0]


def first_line(text: str) -> str:
    """The first line of an exception's message, at most 200 characters, for one-line errors."""
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    return line[:200]


# ---------------------------------------------------------------------------------------------- checkpoints

def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of names to tensors."""
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


@dataclass
class CheckpointData:
    """What CHECKPOINT holds, its tensors memory-mapped where the format allows."""

    obj: Any  # torch.load's object; for save_pretrained / safetensors weights, their (merged) state dict
    weights: WeightFiles  # the files it came from, and their format
    config_json: dict[str, Any] | None  # the config.json beside save_pretrained / safetensors weights


def read_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> CheckpointData:
    """A file saved with ``torch.save``, a ``.safetensors`` file, or a ``save_pretrained`` folder (sharded or not),
    read with its tensors memory-mapped (copy-on-write): nothing is read into memory until it is used."""
    weights = locate(path)
    if weights.format == "safetensors":
        obj: Any = read_safetensors(weights.files)
    elif len(weights.files) == 1:
        obj = read_torch_file(weights.files[0], trust_pickle=trust_pickle, mmap=True)
    else:
        obj = {}
        for shard in weights.files:
            part = read_torch_file(shard, trust_pickle=trust_pickle, what="checkpoint shard", mmap=True)
            if not is_state_dict(part):
                raise InputError(f"checkpoint shard {str(shard)!r} holds a {type(part).__name__}, not a state dict; "
                                 "save the model again with save_pretrained")
            obj.update(part)
    config = read_json(weights.config, CONFIG_FILE) if weights.config is not None else None
    return CheckpointData(obj=obj, weights=weights, config_json=config)


def is_optimizer_state(obj: Any) -> bool:
    """Whether ``obj`` is an optimizer's ``state_dict()`` (``state`` and ``param_groups``)."""
    return isinstance(obj, Mapping) and isinstance(obj.get("state"), Mapping) \
        and isinstance(obj.get("param_groups"), list)
