"""A NaN reaching a watched model's output fails the test (FAILED, not ERROR) with a localized message."""

from __future__ import annotations

import pytest


def test_nan_output_fails_with_origin_kind_phase_and_samples(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(
        test_inner="""
        import torch
        import nanmodels

        def test_model(nan_guard):
            model = nan_guard.watch(nanmodels.Net().eval(), name="net")
            with torch.no_grad():
                model(nanmodels.good_batch())
                model(nanmodels.bad_batch(row=2))
            raise AssertionError("not reached: the guard raises at the forward")
        """
    )
    result = nan_pytester.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    text = result.stdout.str()
    assert "ERROR" not in text
    assert "not reached" not in text
    result.stdout.fnmatch_lines([
        "*NonFiniteError: nanprobe: NaN reached the output of watched model 'net' (call #1, eval mode) "
        "in samples [[]2[]]*",
        "*origin: module 'act' (Log), phase forward, kind nan, samples [[]2[]]*",
    ])
    # the traceback points at the test's forward call
    result.stdout.fnmatch_lines(["*model(nanmodels.bad_batch(row=2))*"])


def test_failure_raised_again_when_the_test_swallows_it(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(
        test_inner="""
        import nanmodels

        def test_model(nan_guard):
            model = nan_guard.watch(nanmodels.Net())
            try:
                model(nanmodels.bad_batch(row=1))
            except Exception:
                pass
        """
    )
    result = nan_pytester.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*NaN reached the output of watched model 'Net' (call #0, train mode) in samples [[]1[]]*",
        "*raised again at the end of the test*",
    ])
