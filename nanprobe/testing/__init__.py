"""Test helpers: :class:`NanGuard` (behind the pytest fixture ``nan_guard`` and ``pytest --nanprobe``) and
:func:`assert_stable` (one call that tries a model on the inputs that usually break it).

Lives here: the guard, its failures and their bundles, and ``assert_stable``. May import: the core modules,
``nanprobe.diagnosis``, ``nanprobe.postmortem`` and ``nanprobe.report``. Imported by: the pytest plugin
(lazily, so a pytest session that uses none of it never imports torch).
"""

from __future__ import annotations

from nanprobe.testing.failures import GuardFailure, GuardSettings, describe_origin, find_origin
from nanprobe.testing.guard import NanGuard, iter_hook_dicts
from nanprobe.testing.stable import BUILTIN_VARIANTS, StabilityReport, Variant, VariantResult, assert_stable

__all__ = ["BUILTIN_VARIANTS", "GuardFailure", "GuardSettings", "NanGuard", "StabilityReport", "Variant",
           "VariantResult", "assert_stable", "describe_origin", "find_origin", "iter_hook_dicts"]
