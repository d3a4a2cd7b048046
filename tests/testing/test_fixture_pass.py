"""A finite model passes under the guard; the report header says the plugin is there."""

from __future__ import annotations

import pytest


def test_finite_model_passes_and_header_line(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(
        test_inner="""
        import torch
        import nanmodels

        def test_model(nan_guard):
            a = nan_guard.watch(nanmodels.Net(), name="a")
            b = nan_guard.watch(nanmodels.InfNet(), name="b")
            out = a(nanmodels.good_batch())
            out.sum().backward()
            b(nanmodels.good_batch())
            nan_guard.check({"loss": out.sum(), "logits": out}, name="step")
            assert nan_guard.failures == []
            assert len(nan_guard.models) == 2
        """
    )
    result = nan_pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["nanprobe 0.1.0: nan_guard fixture available; --nanprobe off"])


def test_header_says_when_the_session_guard_is_on(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(test_inner="def test_nothing():\n    assert 1 + 1 == 2\n")
    result = nan_pytester.runpytest_inprocess("--nanprobe")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["nanprobe 0.1.0: nan_guard fixture available; --nanprobe on*"])
