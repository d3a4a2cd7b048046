"""``--nanprobe-report DIR`` writes a post-mortem bundle per failing guarded test."""

from __future__ import annotations

import json

import pytest

postmortem = pytest.importorskip("nanprobe.postmortem.bundle")


def test_bundle_per_failing_test(nan_pytester: pytest.Pytester) -> None:
    nan_pytester.makepyfile(
        test_inner="""
        import nanmodels

        def test_bad(nan_guard):
            nan_guard.watch(nanmodels.Net().eval(), name="net")(nanmodels.bad_batch(row=1))

        def test_good(nan_guard):
            nan_guard.watch(nanmodels.Net())(nanmodels.good_batch())
        """
    )
    out = nan_pytester.path / "bundles"
    result = nan_pytester.runpytest_inprocess(f"--nanprobe-report={out}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*nanprobe post-mortem*", f"bundle: {out}/test_inner.py_test_bad"])
    assert sorted(p.name for p in out.iterdir()) == ["test_inner.py_test_bad"]
    bundle = postmortem.load_bundle(out / "test_inner.py_test_bad")
    report = json.loads((bundle.path / "report.json").read_text())
    assert report["status"] == "nonfinite"
    assert report["first_nonfinite"]["module"] == "act"
    assert report["first_nonfinite"]["samples"] == [1]
    assert report["pytest"]["test"] == "test_inner.py::test_bad"
    assert bundle.mode == "eval"
    batch = bundle.batch(trust_pickle=True)
    assert float(batch[0][1, 0]) == -1.0
