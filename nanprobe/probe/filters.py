"""Module selection for the probe: ``None`` | glob | list of globs | ``callable(name, module) -> bool``,
normalised once into one predicate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

from torch import nn

from nanprobe.errors import InputError

__all__ = ["NameFilter", "make_predicate"]

NameFilter = None | str | Sequence[str] | Callable[[str, nn.Module], bool]


def make_predicate(spec: NameFilter, default: bool) -> Callable[[str, nn.Module], bool]:
    """Globs match the qualified name (``fnmatch``, case-sensitive); ``None`` gives ``default``."""
    if spec is None:
        return lambda name, module: default
    if callable(spec):
        return spec
    patterns = [spec] if isinstance(spec, str) else list(spec)
    if not all(isinstance(p, str) for p in patterns):
        raise InputError(f"module filter must be a glob, a list of globs or a callable, got {spec!r}")
    return lambda name, module: any(fnmatchcase(name, p) for p in patterns)
