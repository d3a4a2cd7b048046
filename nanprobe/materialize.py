"""Build a model and give it a state dict's tensors without a second copy of the weights.

:func:`fit` builds the model with every ``nn.Parameter`` on the meta device (no memory, no random init). Buffers
are built for real, so those computed in ``__init__`` and absent from the state dict (rotary frequencies, causal
masks) keep their values. ``load_state_dict(assign=True)`` then makes the state dict's tensors, views of the
memory-mapped file, the model's own. What assignment does differently from torch's default copy is put back:
names that shared one tensor (tied weights) share it again, holding the value a copy would have left there, and
a value whose dtype or layout differs from the model's is converted as the copy would have converted it.

The same checks decide each step: after assignment no tensor may be left on meta, and no module may keep, outside
its parameters and buffers, a tensor that is on meta or that assignment replaced (a copy would have updated it in
place; assignment leaves it stale). A build with parameters on meta draws no random numbers for their init, so a
buffer it filled from the global RNG would differ from a normal build's: if that build drew from the CPU RNG and
the model keeps any tensor not taken from the state dict, it is not trusted either.

When the build fails with parameters on meta (it reads a value, say) or the checks fail, the model is built
normally and assigned to under the same checks: the random init is freed as the file's tensors replace it, so
memory still stays at one copy. Only when that fails too is the model built once more and the state dict copied
in, torch's default.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Fitted", "fit", "parameters_on_meta"]

_REGISTRIES = frozenset({"_parameters", "_buffers", "_modules"})
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
_SCAN_DEPTH = 2  # how deep into a module attribute's lists/dicts to look for tensors of its own


@dataclass
class Fitted:
    """A built model holding a state dict's values, and how the keys matched."""

    model: nn.Module
    missing: list[str]  # the model's keys the state dict lacks (a tied name whose partner is present is not)
    unexpected: list[str]  # the state dict's keys the model lacks
    how: str  # "meta" | "assign": the model holds the state dict's tensors (bar dtype/layout conversions) | "copy"


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Every plain ``nn.Parameter`` registered inside the block is moved to the meta device as it is registered;
    buffers and Parameter subclasses are left alone. Patches ``nn.Module.register_parameter`` for the duration (not
    thread-safe: loading happens before anything else runs)."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if type(param) is nn.Parameter and not param.is_meta:
            module._parameters[name] = nn.Parameter(torch.empty_like(param, device="meta"),
                                                    requires_grad=param.requires_grad)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def fit(build: Callable[[], nn.Module], state: Mapping[str, torch.Tensor]) -> Fitted:
    """``build()`` the model and load ``state`` into it: by assignment into a model built with its parameters on
    meta, else into a normally built one, else by copying into a normally built one; each assignment only when
    it is provably what the copy would give. ``build`` may be called up to three times; what it raises when
    building normally propagates, as does load_state_dict's RuntimeError for a size mismatch."""
    fitted = _assign_on_meta(build, state)
    if fitted is None:
        fitted = _assign(build(), state)
    if fitted is None:
        fitted = _copy(build(), state)
    return fitted


# ---------------------------------------------------------------------------------------------------- the paths

def _assign_on_meta(build: Callable[[], nn.Module], state: Mapping[str, torch.Tensor]) -> Fitted | None:
    rng = torch.default_generator.get_state()
    try:
        with warnings.catch_warnings(), parameters_on_meta():
            warnings.simplefilter("ignore")  # a trial build: what the user should see comes from the normal one
            model = build()
    except Exception:
        return None
    if not isinstance(model, nn.Module):
        return None
    drew = not torch.equal(rng, torch.default_generator.get_state())
    return _assign(model, state, keep_none=drew, how="meta")


def _assign(model: nn.Module, state: Mapping[str, torch.Tensor], *, keep_none: bool = False,
            how: str = "assign") -> Fitted | None:
    """Assignment under the checks; None when they fail. ``keep_none``: also fail if the model keeps any tensor
    of its build (one the state dict does not provide, such as a non-persistent buffer)."""
    before = _named_tensors(model)  # keeps the replaced tensors alive, so their ids stay theirs during the checks
    groups = _shared_names(model)
    state = _conform(_match_keys(state, model), before)
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
        _retie(model, groups, state)
    except Exception as e:
        if isinstance(e, RuntimeError) and "size mismatch" in str(e):
            raise  # the same with a normal build: the checkpoint does not fit the model
        return None  # e.g. a module's own _load_from_state_dict that copies into its (meta) tensors
    after = _named_tensors(model)
    if any(t.is_meta for t in after.values()):
        return None
    built = {id(t) for t in before.values()}
    if keep_none and any(id(t) in built for t in after.values()):
        return None
    replaced = built - {id(t) for t in after.values()}
    if _holds_own_tensors(model, replaced):
        return None
    missing, unexpected = _key_report(result, groups, state)
    return Fitted(model=model, missing=missing, unexpected=unexpected, how=how)


def _copy(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Fitted:
    groups = _shared_names(model)
    state = _match_keys(state, model)
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = _key_report(result, groups, state)
    return Fitted(model=model, missing=missing, unexpected=unexpected, how="copy")


# ------------------------------------------------------------------------------------------------------ pieces

def _named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer under every name it has (tied names included)."""
    named = dict(model.named_parameters(remove_duplicate=False))
    named.update(model.named_buffers(remove_duplicate=False))
    return named


def _shared_names(model: nn.Module) -> list[list[str]]:
    """Names that hold one tensor object (tied weights, a module registered twice), in load_state_dict's order."""
    by_id: dict[int, list[str]] = {}
    for name, tensor in _named_tensors(model).items():
        by_id.setdefault(id(tensor), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


def _match_keys(state: Mapping[str, torch.Tensor], model: nn.Module) -> Mapping[str, torch.Tensor]:
    """The renaming of the state dict's keys under which most of them are the model's: none, a wrapper's prefix
    removed (DDP ``module.``, torch.compile ``_orig_mod.``), or a transformers base model's prefix added or
    removed (``transformer.`` for GPT-2). No renaming wins ties."""
    own = set(model.state_dict(keep_vars=True))
    renamings: list[tuple[str, str]] = [("", ""), *((prefix, "") for prefix in _WRAPPER_PREFIXES)]
    base = getattr(model, "base_model_prefix", None)
    if isinstance(base, str) and base:
        renamings += [("", f"{base}."), (f"{base}.", "")]

    def rename(key: str, strip: str, add: str) -> str:
        if strip:
            return key[len(strip):] if key.startswith(strip) else key
        return key if not add or key.startswith(add) else add + key

    best, best_hits = ("", ""), sum(k in own for k in state)
    for strip, add in renamings[1:]:
        hits = sum(rename(k, strip, add) in own for k in state)
        if hits > best_hits:
            best, best_hits = (strip, add), hits
    if best == ("", ""):
        return state
    return {rename(k, *best): v for k, v in state.items()}


def _conform(state: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each value the model will take, in the model's dtype and layout, converted as ``param.copy_(value)`` would;
    values that already match are passed through untouched (still views of the file)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = targets.get(key)
        if (isinstance(value, torch.Tensor) and target is not None and not value.is_meta
                and value.layout == torch.strided):
            if target.dim() == 0 and value.shape == (1,):  # load_state_dict's allowance for very old checkpoints
                value = value[0]
            if value.shape == target.shape and (value.dtype != target.dtype or value.stride() != target.stride()):
                converted = torch.empty_strided(target.shape, target.stride(), dtype=target.dtype, device=value.device)
                converted.copy_(value.detach())
                value = converted
        out[key] = value
    return out


def _set(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, tensor)


def _retie(model: nn.Module, groups: list[list[str]], state: Mapping[str, torch.Tensor]) -> None:
    """Make each group of shared names share one tensor again: the one a copy into the shared tensor would have
    left there, i.e. the last name (in load order) that the state dict has."""
    tensors = _named_tensors(model)
    for names in groups:
        present = [n for n in names if n in state]
        if present:
            winner = tensors[present[-1]]
            for name in names:
                if tensors[name] is not winner:
                    _set(model, name, winner)


def _holds(value: Any, replaced: set[int], depth: int) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_meta or id(value) in replaced
    if depth and isinstance(value, (list, tuple)):
        return any(_holds(v, replaced, depth - 1) for v in value)
    if depth and isinstance(value, dict):
        return any(_holds(v, replaced, depth - 1) for v in value.values())
    return False


def _holds_own_tensors(model: nn.Module, replaced: set[int]) -> bool:
    """Whether some module keeps, outside its registries, a meta tensor or one that assignment replaced (a copy
    would have updated it in place; assignment leaves it stale)."""
    return any(_holds(value, replaced, _SCAN_DEPTH)
               for module in model.modules() for key, value in vars(module).items() if key not in _REGISTRIES)


def _key_report(result: Any, groups: list[list[str]], state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    covered = {name for names in groups if any(n in state for n in names) for name in names}
    return [k for k in result.missing_keys if k not in covered], list(result.unexpected_keys)
