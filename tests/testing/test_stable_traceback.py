"""An ``assert_stable`` failure shows the test's call and the message, not nanprobe's own source."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import nanprobe
from nanprobe.testing import assert_stable


@pytest.fixture(scope="module", autouse=True)
def _warm_up() -> None:
    """Import what a failing assert_stable imports (torch's compiler stack, ~800 modules) in this process first:
    pytester's in-process runs drop the modules first imported inside them, and some of those cannot be
    imported twice."""
    class Standardize(nn.Module):  # a constant row is 0/0: a failure, localized
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)

    assert_stable(Standardize(), torch.randn(4, 3), variants=["zero_variance"], raise_on_failure=False)


def _nanprobe_source_lines() -> set[str]:
    """Every non-trivial line of nanprobe's source, stripped (what pytest would print of its frames)."""
    lines: set[str] = set()
    for path in Path(nanprobe.__file__).parent.rglob("*.py"):
        lines.update(s for line in path.read_text(encoding="utf-8").splitlines() if len(s := line.strip()) > 12)
    return lines


@pytest.mark.parametrize("failure", ["nonfinite", "raised"])
def test_assert_stable_failure_hides_nanprobe_frames(nan_pytester: pytest.Pytester, failure: str) -> None:
    variants = '["base"]' if failure == "raised" else '["zero_variance"]'
    model = "nanmodels.Net()" if failure == "raised" else "Standardize()"
    batch = "torch.ones(3, 5)" if failure == "raised" else "torch.randn(4, 3)"  # Net wants 4 features
    nan_pytester.makepyfile(
        test_inner=f"""
        import torch
        from torch import nn
        import nanmodels
        from nanprobe.testing import assert_stable


        class Standardize(nn.Module):
            def forward(self, x):
                return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)


        def test_stable():
            assert_stable({model}, {batch}, variants={variants})
        """
    )
    result = nan_pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    output = result.stdout.lines
    source = _nanprobe_source_lines()
    leaked = [line for line in output if line.lstrip(">").strip() in source]
    assert not leaked, "\n".join(leaked)
    assert not any("nanprobe/testing/" in line for line in output), "\n".join(output)
    call = f"assert_stable({model}, {batch}, variants={variants})".replace("[", "[[]")
    result.stdout.fnmatch_lines([f">*{call}", "E * assert_stable(*): * runs failed"])
