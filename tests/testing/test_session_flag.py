"""``pytest --nanprobe`` guards every top-level module call of an unmodified suite."""

from __future__ import annotations

import pytest

PLAIN_SUITE = """
import torch
import nanmodels

def test_finite():
    model = nanmodels.Net()
    assert model(nanmodels.good_batch()).shape == (4, 2)

def test_goes_nan_without_noticing():
    model = nanmodels.Net().eval()
    with torch.no_grad():
        out = model(nanmodels.bad_batch(row=3))
    assert out.shape == (4, 2)
"""


def test_plain_suite_passes_without_the_flag(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(test_inner=PLAIN_SUITE)
    nan_pytester.runpytest_inprocess().assert_outcomes(passed=2)


def test_flag_fails_the_test_whose_model_goes_nan(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(test_inner=PLAIN_SUITE)
    result = nan_pytester.runpytest_inprocess("--nanprobe", "-rA")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines_random([
        "PASSED test_inner.py::test_finite",
        "FAILED test_inner.py::test_goes_nan_without_noticing - *",
    ])
    # only the top-level call is watched (Net), and the origin inside it is localized
    result.stdout.fnmatch_lines([
        "*NaN reached the output of watched model 'Net' (call #0, eval mode) in samples [[]3[]]*",
        "*origin: module 'act' (Log), phase forward, kind nan, samples [[]3[]]*",
    ])
    assert "watched model 'Log'" not in result.stdout.str()


def test_flag_respects_the_marker_and_no_diagnose(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(
        test_inner="""
        import pytest
        import nanmodels

        @pytest.mark.nanprobe(enabled=False)
        def test_expected_nan():
            assert nanmodels.Net()(nanmodels.bad_batch()).isnan().any()

        def test_unexpected_nan():
            nanmodels.Net()(nanmodels.bad_batch())
        """
    )
    result = nan_pytester.runpytest_inprocess("--nanprobe", "--nanprobe-no-diagnose")
    result.assert_outcomes(passed=1, failed=1)
    assert "origin:" not in result.stdout.str()


def test_flag_and_fixture_together(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(
        test_inner="""
        import nanmodels

        def test_named(nan_guard):
            named = nan_guard.watch(nanmodels.Net(), name="mine")
            named(nanmodels.good_batch())
            nanmodels.InfNet()(nanmodels.zero_row_batch(row=0))  # not watched by name: the session guard sees it
        """
    )
    result = nan_pytester.runpytest_inprocess("--nanprobe")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Inf reached the output of watched model 'InfNet' (call #0, train mode) "
                                 "in samples [[]0[]]*"])
