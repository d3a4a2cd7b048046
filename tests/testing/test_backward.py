"""A non-finite gradient after ``backward()`` fails the test at the backward call."""

from __future__ import annotations

import pytest


def test_backward_nan_caught_and_localized(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(
        test_inner="""
        import nanmodels

        def test_train_step(nan_guard):
            model = nan_guard.watch(nanmodels.Net(act=nanmodels.Sqrt()), name="sqrtnet")
            out = model(nanmodels.zero_row_batch(row=1))  # sqrt(0) = 0: the forward is finite
            loss = out.sum()
            loss.backward()
            raise AssertionError("not reached")
        """
    )
    result = nan_pytester.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "not reached" not in text
    result.stdout.fnmatch_lines([
        "*NonFiniteError: nanprobe: NaN in the gradients of watched model 'sqrtnet' after backward "
        "(last call #0, train mode): pre.weight, pre.bias*",
        "*origin: module 'act' (Sqrt), phase backward*",
    ])
    result.stdout.fnmatch_lines(["*loss.backward()*"])


def test_nan_coming_from_the_loss_is_blamed_on_the_loss(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(
        test_inner="""
        import torch
        import nanmodels

        def test_train_step(nan_guard):
            model = nan_guard.watch(nanmodels.Net(act=torch.nn.Identity()), name="net")
            out = model(nanmodels.good_batch())
            loss = torch.sqrt(out - out).sum()  # d sqrt(0) = inf, outside the model
            loss.backward()
        """
    )
    result = nan_pytester.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*in the gradients of watched model 'net' after backward*",
        "*origin: outside the model: the gradient arriving at its output was already non-finite*",
    ])


def test_backward_check_can_be_turned_off(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(
        test_inner="""
        import nanmodels

        def test_train_step(nan_guard):
            model = nan_guard.watch(nanmodels.Net(act=nanmodels.Sqrt()))
            model(nanmodels.zero_row_batch()).sum().backward()
        """
    )
    result = nan_pytester.runpytest_inprocess("--nanprobe-no-backward")
    result.assert_outcomes(passed=1)
