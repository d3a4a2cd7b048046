"""``nan_guard.check(obj, name=...)`` checks any tensor structure explicitly."""

from __future__ import annotations

import pytest


def test_check_names_the_structure_path_and_rows(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(
        test_inner="""
        import torch

        def test_clean(nan_guard):
            nan_guard.check({"loss": torch.tensor(1.0), "logits": torch.zeros(3, 2)}, name="step")

        def test_dirty(nan_guard):
            logits = torch.zeros(3, 2)
            logits[1, 0] = float("nan")
            nan_guard.check({"loss": torch.tensor(1.0), "logits": logits, "ids": torch.arange(3)}, name="step")
        """
    )
    result = nan_pytester.runpytest_inprocess("-rA")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*nanprobe: NaN in 'step' at step[[]'logits'[]], samples [[]1[]]*"])
