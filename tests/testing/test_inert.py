"""Loaded in every pytest session, the plugin costs nothing unless used: no torch import, no hooks."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_importing_the_plugin_does_not_import_torch() -> None:
    code = "import sys, nanprobe.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_no_hooks_during_an_unguarded_test(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(
        test_inner="""
        import torch.nn.modules.module as module_mod
        import nanmodels

        def test_plain():
            nanmodels.Net()(nanmodels.bad_batch())  # NaN, but nobody asked for the guard
            assert not module_mod._global_forward_hooks and not module_mod._global_forward_pre_hooks
        """
    )
    nan_pytester.runpytest_inprocess().assert_outcomes(passed=1)
