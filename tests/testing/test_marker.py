"""``@pytest.mark.nanprobe(...)`` adjusts the guard for one test."""

from __future__ import annotations

import pytest


def test_marker_is_declared(nan_pytester: pytest.Pytester) -> None:
    result = nan_pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.nanprobe(enabled=True, allow_inf=False, allow_modules=()*"])


def test_marker_options(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(
        test_inner="""
        import pytest
        import nanmodels

        @pytest.mark.nanprobe(allow_inf=True)
        def test_inf_allowed(nan_guard):
            nan_guard.watch(nanmodels.InfNet())(nanmodels.zero_row_batch())

        def test_inf_not_allowed(nan_guard):
            nan_guard.watch(nanmodels.InfNet())(nanmodels.zero_row_batch(row=3))

        @pytest.mark.nanprobe(allow_inf=True)
        def test_nan_still_fails_with_allow_inf(nan_guard):
            nan_guard.watch(nanmodels.Net())(nanmodels.bad_batch())

        @pytest.mark.nanprobe(allow_modules=["act"])
        def test_origin_module_allowed(nan_guard):
            nan_guard.watch(nanmodels.Net())(nanmodels.bad_batch())

        @pytest.mark.nanprobe(allow_modules="Log")
        def test_origin_module_type_allowed(nan_guard):
            nan_guard.watch(nanmodels.Net())(nanmodels.bad_batch())

        @pytest.mark.nanprobe(allow_modules=["head"])
        def test_other_module_allowed_does_not_help(nan_guard):
            nan_guard.watch(nanmodels.Net())(nanmodels.bad_batch())

        @pytest.mark.nanprobe(enabled=False)
        def test_disabled(nan_guard):
            nan_guard.watch(nanmodels.Net())(nanmodels.bad_batch())

        @pytest.mark.nanprobe(allow_everything=True)
        def test_unknown_option(nan_guard):
            pass
        """
    )
    result = nan_pytester.runpytest_inprocess("-rA")
    result.assert_outcomes(passed=4, failed=3, errors=1)
    result.stdout.fnmatch_lines_random([
        "PASSED test_inner.py::test_inf_allowed",
        "FAILED test_inner.py::test_inf_not_allowed - *",
        "FAILED test_inner.py::test_nan_still_fails_with_allow_inf - *",
        "PASSED test_inner.py::test_origin_module_allowed",
        "PASSED test_inner.py::test_origin_module_type_allowed",
        "FAILED test_inner.py::test_other_module_allowed_does_not_help - *",
        "PASSED test_inner.py::test_disabled",
        "ERROR test_inner.py::test_unknown_option - *",
    ])
    result.stdout.fnmatch_lines_random([
        "*Inf reached the output of watched model 'InfNet' (call #0, train mode) in samples [[]3[]]*",
        "*origin: module 'recip' (Recip), phase forward, kind inf, samples [[]3[]]*",
        "*unknown nanprobe option(s) [[]'allow_everything'[]]*",
    ])
    # count in the failure sections only: with CI set, pytest repeats whole messages in the short summary
    failures = result.stdout.str().split("short test summary info")[0]
    assert failures.count("origin: module 'act' (Log), phase forward, kind nan") == 2
