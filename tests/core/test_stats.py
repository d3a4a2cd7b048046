"""tensor_stats / stats_vector against a numpy reference, NaN and ±Inf injected."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nanprobe.kinds import Kind
from nanprobe.stats import TensorStats, stats_from_vector, stats_vector, tensor_stats

DTYPES = {"float16": (torch.float16, np.float16, 6e4), "float32": (torch.float32, np.float32, 1e6),
          "float64": (torch.float64, np.float64, 1e12)}
SPECIAL = [math.nan, math.inf, -math.inf]


def reference(a: np.ndarray) -> dict[str, object]:
    a64 = a.astype(np.float64).ravel()
    fin = a64[np.isfinite(a64)]
    ref: dict[str, object] = {"numel": a.size, "nan": int(np.isnan(a64).sum()),
                              "posinf": int(np.isposinf(a64).sum()), "neginf": int(np.isneginf(a64).sum()),
                              "zeros": int((a64 == 0).sum())}
    if fin.size:
        ref.update(min=fin.min(), max=fin.max(), absmax=np.abs(fin).max(), mean=fin.mean(), std=fin.std())
    else:
        ref.update(min=None, max=None, absmax=None, mean=None, std=None)
    return ref


def check(s: TensorStats, a: np.ndarray) -> None:
    ref = reference(a)
    for key in ("numel", "nan", "posinf", "neginf", "zeros"):
        assert getattr(s, key) == ref[key], key
    if ref["min"] is None:
        assert s.min is None and s.mean is None and s.std is None
        return
    scale = float(ref["absmax"]) or 1.0
    assert s.min == pytest.approx(ref["min"], rel=1e-6, abs=1e-12)
    assert s.max == pytest.approx(ref["max"], rel=1e-6, abs=1e-12)
    assert s.absmax == pytest.approx(ref["absmax"], rel=1e-6, abs=1e-12)
    assert s.mean == pytest.approx(ref["mean"], rel=1e-4, abs=1e-5 * scale)
    assert s.std == pytest.approx(ref["std"], rel=1e-3, abs=1e-4 * scale)


@st.composite
def arrays(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    name = draw(st.sampled_from(sorted(DTYPES)))
    _, np_dtype, bound = DTYPES[name]
    n = draw(st.integers(0, 40))
    values = draw(st.lists(st.one_of(
        st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=16 if name == "float16" else 64),
        st.sampled_from([*SPECIAL, 0.0, -0.0])), min_size=n, max_size=n))
    return name, np.asarray(values, dtype=np.float64).astype(np_dtype)


@settings(max_examples=150, deadline=None)
@given(arrays())
def test_tensor_stats_matches_numpy(case: tuple[str, np.ndarray]) -> None:
    name, a = case
    t = torch.from_numpy(a.copy())
    s = tensor_stats(t)
    assert s.dtype == name and s.shape == (a.size,)
    check(s, a)


@settings(max_examples=150, deadline=None)
@given(arrays())
def test_stats_vector_matches_numpy(case: tuple[str, np.ndarray]) -> None:
    _, a = case
    t = torch.from_numpy(a.copy())
    vec = stats_vector(t)
    assert vec.dtype == torch.float64 and vec.device == t.device
    check(stats_from_vector(vec.tolist(), t.dtype, t.shape), a)


def test_kind_and_counts() -> None:
    t = torch.tensor([1.0, math.nan, math.inf, -math.inf, 0.0])
    s = tensor_stats(t)
    assert (s.nan, s.posinf, s.neginf, s.zeros, s.nonfinite) == (1, 1, 1, 1, 3)
    assert s.kind == "nan" and s.kinds == Kind.NAN | Kind.POSINF | Kind.NEGINF
    assert (s.min, s.max, s.absmax) == (0.0, 1.0, 1.0)
    assert tensor_stats(torch.tensor([math.inf, 2.0])).kind == "inf"
    assert tensor_stats(torch.tensor([2.0])).kind is None


def test_integer_and_bool_counts_only() -> None:
    s = tensor_stats(torch.tensor([[0, 3], [0, -1]]))
    assert (s.dtype, s.numel, s.zeros, s.nonfinite, s.min, s.mean) == ("int64", 4, 2, 0, None, None)
    b = tensor_stats(torch.tensor([True, False, False]))
    assert (b.dtype, b.zeros, b.std) == ("bool", 2, None)
    v = stats_from_vector(stats_vector(torch.tensor([0, 5])).tolist(), torch.int64, (2,))
    assert (v.zeros, v.numel, v.min) == (1, 2, None)


def test_complex_uses_magnitudes() -> None:
    t = torch.tensor([3 + 4j, 0j, complex(math.nan, 1.0)], dtype=torch.complex64)
    s = tensor_stats(t)
    assert s.dtype == "complex64" and s.nan == 1 and s.zeros == 1
    assert s.max == pytest.approx(5.0) and s.min == 0.0
    clean = tensor_stats(torch.tensor([3 + 4j, 0j], dtype=torch.complex128))
    assert clean.mean == pytest.approx(2.5) and clean.dtype == "complex128"


def test_empty_and_noncontiguous() -> None:
    e = tensor_stats(torch.empty(0, 3))
    assert (e.numel, e.shape, e.min, e.nonfinite) == (0, (0, 3), None, 0)
    assert stats_from_vector(stats_vector(torch.empty(0)).tolist(), torch.float32, (0,)).numel == 0
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    base[0, 1] = math.nan
    t = base.t()[1:]  # non-contiguous view
    assert not t.is_contiguous()
    s = tensor_stats(t)
    check(s, t.numpy())
    finite = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()[1:]
    check(tensor_stats(finite), finite.numpy())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_wide(dtype: torch.dtype) -> None:
    t = torch.full((4096,), 60000.0 if dtype == torch.float16 else 1e30, dtype=dtype)
    s = tensor_stats(t)
    assert s.mean == pytest.approx(float(t[0]), rel=1e-3) and s.std == pytest.approx(0.0, abs=1e-3 * s.absmax)
    v = stats_from_vector(stats_vector(t).tolist(), dtype, t.shape)
    assert v.mean == pytest.approx(float(t[0]), rel=1e-3)


def test_huge_values_do_not_overflow() -> None:
    t = torch.tensor([1e38, -1e38, 3e38], dtype=torch.float32)
    s = tensor_stats(t)
    assert math.isfinite(s.std) and s.std == pytest.approx(np.std(t.double().numpy()), rel=1e-4)


def test_to_dict_is_json_ready() -> None:
    d = tensor_stats(torch.ones(2, 3)).to_dict()
    assert d["shape"] == [2, 3] and d["dtype"] == "float32" and d["mean"] == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["mixed", "negative", "nonnegative", "positive", "zeros"])
def test_short_path_signs_and_signed_zeros(dtype: torch.dtype, case: str) -> None:
    """The CPU short path reads min/max and zeros off an integer view: every sign pattern, +0.0 and -0.0,
    on a tensor large enough for vectorised (and parallel) reductions."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(70_007, generator=g, dtype=dtype)
    if case == "negative":
        t = -t.abs() - 0.5
        t[::7] = -0.0
    elif case == "nonnegative":
        t = t.abs()
        t[::5] = 0.0
    elif case == "positive":
        t = t.abs() + 1e-3
    elif case == "zeros":
        t[::3] = 0.0
        t[1::11] = -0.0
    else:
        t[::13] = 0.0
    check(tensor_stats(t), t.numpy())
    check(tensor_stats(t.reshape(7, -1)[:, ::2]), t.reshape(7, -1)[:, ::2].numpy())  # a strided view
