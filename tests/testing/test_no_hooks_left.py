"""Neither the fixture nor ``--nanprobe`` leaves a hook behind, whatever the outcome of the test."""

from __future__ import annotations

import pytest
import torch.nn.modules.module as module_mod

from nanprobe.testing import iter_hook_dicts

SUITE = """
import pytest
import torch.nn.modules.module as module_mod
import nanmodels
from nanprobe.testing import iter_hook_dicts

MODELS = []
BEFORE = {name: dict(d) for name, d in iter_hook_dicts()}


@pytest.fixture
def model():
    m = nanmodels.Net()
    MODELS.append(m)
    return m


def test_failing(nan_guard, model):
    nan_guard.watch(model)
    assert module_mod._global_forward_hooks and module_mod._global_forward_pre_hooks
    model(nanmodels.bad_batch())


def test_passing(nan_guard, model):
    nan_guard.watch(model)
    model(nanmodels.good_batch()).sum().backward()


def test_backward_failing(nan_guard):
    m = nanmodels.Net(act=nanmodels.Sqrt())
    MODELS.append(m)
    nan_guard.watch(m)
    m(nanmodels.zero_row_batch()).sum().backward()


def test_unguarded(model):
    model(nanmodels.good_batch())


@pytest.mark.nanprobe(enabled=False)  # with --nanprobe, this test's own call would be guarded otherwise
def test_zz_nothing_left():
    left = {name: dict(d) for name, d in iter_hook_dicts() if dict(d) != BEFORE.get(name)}
    assert left == {}
    assert not module_mod._global_forward_hooks and not module_mod._global_forward_pre_hooks
    assert not module_mod._global_backward_hooks and not module_mod._global_backward_pre_hooks
    per_module = [name for name, d in iter_hook_dicts(MODELS) if d]
    assert per_module == []
    assert len(MODELS) == 4
"""


@pytest.mark.parametrize("flags", [(), ("--nanprobe",)], ids=["fixture", "session"])
def test_no_hooks_left(nan_pytester: pytest.Pytester, flags: tuple[str, ...]) -> None:
    before = {name: dict(d) for name, d in iter_hook_dicts()}
    nan_pytester.makepyfile(test_inner=SUITE)
    result = nan_pytester.runpytest_inprocess("-p", "no:cacheprovider", *flags, "-rA")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines_random(["PASSED test_inner.py::test_zz_nothing_left",
                                        "FAILED test_inner.py::test_failing - *",
                                        "FAILED test_inner.py::test_backward_failing - *"])
    assert {name: dict(d) for name, d in iter_hook_dicts()} == before
    assert not module_mod._global_forward_hooks
