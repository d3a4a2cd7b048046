"""Test helpers: :class:`NanGuard` (behind the pytest fixture ``nan_guard`` and ``pytest --nanprobe``) and
:func:`assert_stable` (one call that tries a model on the inputs that usually break it)."""

from __future__ import annotations

from nanprobe.testing.failures import GuardFailure, GuardSettings, describe_origin, localize
from nanprobe.testing.guard import NanGuard, iter_hook_dicts
from nanprobe.testing.stable import BUILTIN_VARIANTS, StabilityReport, Variant, VariantResult, assert_stable

__all__ = ["BUILTIN_VARIANTS", "GuardFailure", "GuardSettings", "NanGuard", "StabilityReport", "Variant",
           "VariantResult", "assert_stable", "describe_origin", "iter_hook_dicts", "localize"]
