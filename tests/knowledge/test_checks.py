"""Each check on tiny tensors: it fires (with the rows) when its condition holds, and stays quiet otherwise."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nanprobe.knowledge import CHECKS, Evidence, run_check

T = torch.tensor
INF = float("inf")
H = torch.float16


def _rows(*rows: list[float]) -> torch.Tensor:
    return T(list(rows))


def _const(row: int = 1) -> torch.Tensor:
    x = torch.arange(12.0).reshape(3, 4)
    x[row] = 2.0
    return x


_KPM = torch.zeros(3, 4, dtype=torch.bool)
_KPM_BAD = _KPM.clone()
_KPM_BAD[2] = True
_EIGH_REPEATED = torch.stack([torch.diag(T([1.0, 2.0, 3.0])), torch.eye(3)])

# (check, op, args, kwargs, rows): rows is the expected Evidence.rows (None: fires without rows).
HITS: list[tuple[str, str, tuple[Any, ...], dict[str, Any], tuple[int, ...] | None]] = [
    ("input_nonpositive", "aten.log", (_rows([1.0, 2.0], [3.0, 4.0], [0.0, 1.0]),), {}, (2,)),
    ("input_negative", "aten.sqrt", (_rows([1.0], [-1.0]),), {}, (1,)),
    ("input_zero", "aten.sqrt", (_rows([1.0], [0.0], [0.0]),), {}, (1, 2)),
    ("input_at_most_minus_one", "aten.log1p", (T([0.0, -1.0]),), {}, (1,)),
    ("input_outside_unit_interval", "aten.acos", (T([1.5, 0.5]),), {}, (0,)),
    ("input_at_unit_boundary", "aten.asin", (T([0.5, -1.0]),), {}, (1,)),
    ("input_outside_open_unit_interval", "aten.erfinv", (T([1.0, 0.5]),), {}, (0,)),
    ("input_below_one", "aten.acosh", (T([0.5, 2.0]),), {}, (0,)),
    ("input_at_most_one", "aten.acosh", (T([2.0, 1.0]),), {}, (1,)),
    ("input_outside_open_zero_one", "aten.logit", (T([0.5, 1.0]),), {}, (1,)),
    ("nonpositive_integer", "aten.lgamma", (T([-2.0, 0.5]),), {}, (0,)),
    ("nonpositive_integer", "aten.polygamma", (1, T([0.5, 0.0])), {}, (1,)),
    ("pow_zero_to_negative", "aten.pow.Tensor_Scalar", (T([1.0, 0.0]), -2.0), {}, (1,)),
    ("pow_negative_to_fractional", "aten.pow.Tensor_Scalar", (T([-1.0, 4.0]), 0.5), {}, (0,)),
    ("pow_zero_below_one", "aten.pow.Tensor_Tensor", (T([0.0, 0.0]), T([0.5, 2.0])), {}, (0,)),
    ("denominator_zero", "aten.div.Tensor", (T([1.0, 1.0]), T([2.0, 0.0])), {}, (1,)),
    ("zero_over_zero", "aten.div.Tensor", (T([0.0, 1.0]), T([0.0, 0.0])), {}, (0,)),
    ("xlogy_y_nonpositive", "aten.xlogy.Tensor", (T([1.0, 0.0]), T([0.0, 0.0])), {}, (0,)),
    ("xlogy_y_nonpositive", "aten.special_xlog1py", (T([1.0, 1.0]), T([0.0, -1.0])), {}, (1,)),
    ("xlogy_y_zero", "aten.xlogy.Tensor", (T([0.0, 1.0]), T([0.0, 1.0])), {}, (0,)),
    ("zero_times_inf", "aten.mul.Tensor", (T([0.0, 1.0]), T([INF, INF])), {}, (0,)),
    ("inf_minus_inf", "aten.sub.Tensor", (T([INF, 1.0]), T([INF, -INF])), {}, (0,)),
    ("inf_minus_inf", "aten.add.Tensor", (T([INF, INF]), T([INF, -INF])), {}, (1,)),
    ("exp_overflow", "aten.exp", (T([1.0, 89.0]),), {}, (1,)),
    ("exp_overflow", "aten.exp", (T([1.0, 12.0], dtype=H),), {}, (1,)),
    ("exp_overflow", "aten.exp2", (T([129.0, 1.0]),), {}, (0,)),
    ("exp_overflow", "aten.cosh", (T([1.0, -90.0]),), {}, (1,)),
    ("pow_overflow", "aten.pow.Tensor_Scalar", (T([100.0, 1.0]), 30.0), {}, (0,)),
    ("square_overflow", "aten.mse_loss", (T([2e19, 0.0]), T([0.0, 0.0]), 1), {}, (0,)),
    ("norm_overflow", "aten.linalg_vector_norm", (_rows([1e20, 1e20], [1.0, 1.0]), 2, [-1]), {}, (0,)),
    ("norm_overflow", "aten._cdist_forward", (torch.full((1, 3), 1e20), torch.zeros(2, 3), 2.0, None), {}, (0,)),
    ("near_dtype_max", "aten.sub.Tensor", (T([3e38, 1.0]), T([1.0, 1.0])), {}, (0,)),
    ("product_overflow", "aten.mm", (torch.full((2, 4), 300.0, dtype=H), torch.full((4, 2), 300.0, dtype=H)), {},
     (0, 1)),
    ("product_overflow", "aten.addmm", (torch.zeros(2), _rows([1e20, 1.0], [1.0, 1.0]),
                                        torch.full((2, 2), 1e20)), {}, (0,)),
    ("product_overflow", "aten.convolution", (torch.full((1, 2, 4), 1e20), torch.full((3, 2, 2), 1e20), None, [1],
                                              [0], [1], False, [0], 1), {}, (0,)),
    ("arithmetic_overflow", "aten.mul.Tensor", (T([300.0, 1.0], dtype=H), T([300.0, 1.0], dtype=H)), {}, (0,)),
    ("arithmetic_overflow", "aten.add.Tensor", (T([3e38, 1.0]), 3e38), {}, (0,)),
    ("arithmetic_overflow", "aten.div.Tensor", (T([1e30, 1.0]), T([1e-30, 0.0])), {}, (0,)),
    ("reduction_overflow", "aten.sum.dim_IntList", (torch.full((2, 3), 3e4, dtype=H), [1]), {}, (0, 1)),
    ("reduction_overflow", "aten.mean.default", (torch.full((4,), 3e38, dtype=torch.bfloat16),), {}, (0,)),
    ("reduction_overflow", "aten.cumprod", (torch.full((4,), 1e10), 0), {}, (3,)),
    ("cast_overflow", "aten._to_copy", (T([7e4, 1.0]),), {"dtype": H}, (0,)),
    ("variance_overflow", "aten.native_layer_norm", (torch.cat([torch.full((1, 8), 1.0), torch.randn(1, 8) * 1e21]),
                                                     [8], None, None, 1e-5), {}, (1,)),
    ("variance_overflow", "aten.var.correction", (torch.randn(2, 8) * 1e20, [-1]), {"correction": 1}, (0, 1)),
    ("variance_overflow", "aten.var.correction", (torch.randn(8, 2) * 1e20, [0]), {"correction": 1}, None),
    ("soft_margin_overflow", "aten.soft_margin_loss", (T([-100.0, 1.0]), T([1.0, 1.0]), 1), {}, (0,)),
    ("fp16_probability_at_bound", "aten.binary_cross_entropy", (T([0.0, 0.5], dtype=H), T([1.0, 1.0], dtype=H)), {},
     (0,)),
    ("empty_input", "aten.mean.default", (torch.zeros(0, 5),), {}, None),
    ("all_neg_inf_row", "aten._softmax", (_rows([0.0, 1.0], [-INF, -INF]), -1, False), {}, (1,)),
    ("all_neg_inf_row", "aten.logsumexp", (_rows([-INF, -INF], [0.0, 1.0]), [1], False), {}, (0,)),
    ("too_few_for_correction", "aten.std.correction", (torch.randn(3, 1), [-1]), {}, None),
    ("too_few_for_correction", "aten.var.correction", (torch.randn(3, 2), [-1]), {"correction": 2}, None),
    ("batch_too_small_for_correction", "aten.std.correction", (torch.randn(1, 4), [0]), {}, None),
    ("batch_too_small_for_correction", "aten.var.dim", (torch.randn(1, 4), [0], True), {}, None),
    ("constant_row_eps0", "aten.native_layer_norm", (_const(1), [4], None, None, 0.0), {}, (1,)),
    ("constant_row_eps0", "aten.native_group_norm", (_const(2), None, None, 3, 4, 1, 2, 0.0), {}, (2,)),
    ("zero_row_eps0", "rms_norm", (_rows([0.0, 0.0], [1.0, 2.0]), [2], None), {"eps": 0.0}, (0,)),
    ("running_var_nonpositive", "aten.native_batch_norm", (torch.randn(3, 4), None, None, torch.zeros(4),
                                                           T([1.0, -1.0, 1.0, 1.0]), False, 0.1, 1e-5), {}, None),
    ("zero_norm_vector", "aten.linalg_vector_norm", (_rows([0.0, 0.0], [1.0, 2.0]), 2, [-1]), {}, (0,)),
    ("all_keys_masked", "aten._native_multi_head_attention", (torch.randn(3, 4, 8), None, None, 8, 2, None, None,
                                                              None, None, _KPM_BAD), {}, (2,)),
    ("all_keys_masked", "aten._masked_softmax", (torch.randn(2, 3), T([[True, True, True], [False, True, False]]), 1,
                                                 0), {}, (0,)),
    ("all_ignored_targets", "aten.nll_loss_forward", (torch.randn(3, 4), T([-100, -100, -100]), None, 1, -100), {},
     None),
    ("zero_total_weight", "aten.nll_loss_forward", (torch.randn(3, 4), T([0, 0, -100]), T([0.0, 1, 1, 1]), 1, -100),
     {}, None),
    ("neg_inf_at_target", "aten.nll_loss_forward", (_rows([0.0, -INF], [-INF, 0.0]), T([0, 0]), None, 1, -100), {},
     (1,)),
    ("ctc_impossible_alignment", "aten._ctc_loss", (torch.randn(3, 2, 5), T([[1, 2, 3, 4], [1, 1, 0, 0]]), [3, 2],
                                                    [4, 2], 0, False), {}, (0, 1)),
    ("ctc_impossible_alignment", "aten._ctc_loss", (torch.randn(3, 2, 5), T([1, 2, 1, 1]), [3, 2], [2, 2], 0, False),
     {}, (1,)),
    ("probability_outside_unit_interval", "aten.binary_cross_entropy", (T([0.5, float("nan")]), T([1.0, 1.0])), {},
     (1,)),
    ("repeated_eigenvalues", "aten._linalg_eigh", (_EIGH_REPEATED, "L", True), {}, (1,)),
    ("repeated_eigenvalues", "aten.linalg_eig", (torch.eye(2),), {}, None),
    ("degenerate_singular_values", "aten._linalg_svd", (torch.eye(3), False, True), {}, None),
    ("degenerate_singular_values", "aten._linalg_svd", (T([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), False, True), {},
     None),
    ("singular_matrix", "aten.linalg_inv_ex", (torch.stack([torch.eye(2), T([[1.0, 2.0], [2.0, 4.0]])]),), {}, (1,)),
    ("not_positive_definite", "aten.linalg_cholesky_ex", (T([[1.0, 3.0], [3.0, 4.0]]),), {}, None),
    ("nonpositive_determinant", "logdet", (T([[-1.0, 0.0], [0.0, 1.0]]),), {}, None),
    ("eps_flushes_to_zero", "Adam", (T([1.0, 2.0], dtype=torch.float16), {"eps": 1e-8}, {}), {}, None),
]

# (check, op, args, kwargs): the condition does not hold (or the op is not one the check reads).
MISSES: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = [
    ("input_nonpositive", "aten.log", (T([1.0, 1e-30]),), {}),
    ("input_nonpositive", "aten.log", (T([1.0, float("nan"), -INF]),), {}),  # non-finite inputs are not the op's fault
    ("input_nonpositive", "aten.mul.Tensor", (T([0.0]), T([1.0])), {}),  # not an op it reads
    ("input_negative", "aten.sqrt", (T([0.0, 1.0]),), {}),
    ("input_zero", "aten.sqrt", (T([1e-30, 1.0]),), {}),
    ("input_at_most_minus_one", "aten.log1p", (T([-0.999]),), {}),
    ("input_outside_unit_interval", "aten.acos", (T([1.0, -1.0]),), {}),
    ("input_at_unit_boundary", "aten.asin", (T([0.999]),), {}),
    ("input_outside_open_unit_interval", "aten.erfinv", (T([0.999, -0.5]),), {}),
    ("input_below_one", "aten.acosh", (T([1.0]),), {}),
    ("input_at_most_one", "aten.acosh", (T([1.5]),), {}),
    ("input_outside_open_zero_one", "aten.logit", (T([0.0, 1.0]), 1e-6), {}),
    ("nonpositive_integer", "aten.lgamma", (T([-0.5, 1.0]),), {}),
    ("pow_zero_to_negative", "aten.pow.Tensor_Scalar", (T([0.0, 1.0]), 2.0), {}),
    ("pow_negative_to_fractional", "aten.pow.Tensor_Scalar", (T([-1.0]), 2.0), {}),
    ("pow_zero_below_one", "aten.pow.Tensor_Scalar", (T([0.0]), 1.5), {}),
    ("denominator_zero", "aten.div.Tensor", (T([1.0]), T([1e-30])), {}),
    ("zero_over_zero", "aten.div.Tensor", (T([1.0]), T([0.0])), {}),
    ("xlogy_y_nonpositive", "aten.xlogy.Tensor", (T([0.0]), T([0.0])), {}),
    ("xlogy_y_zero", "aten.xlogy.Tensor", (T([0.0]), T([0.5])), {}),
    ("zero_times_inf", "aten.mul.Tensor", (T([0.0, 1.0]), T([1.0, INF])), {}),
    ("inf_minus_inf", "aten.add.Tensor", (T([INF]), T([INF])), {}),
    ("exp_overflow", "aten.exp", (T([88.0]),), {}),
    ("pow_overflow", "aten.pow.Tensor_Scalar", (T([10.0]), 30.0), {}),
    ("square_overflow", "aten.mse_loss", (T([1e19]), T([0.0]), 1), {}),
    ("norm_overflow", "aten.linalg_vector_norm", (T([1e18, 1e18]), 2, None), {}),
    ("near_dtype_max", "aten.sub.Tensor", (T([1e30]), T([1.0])), {}),
    ("product_overflow", "aten.mm", (torch.full((2, 4), 100.0, dtype=H), torch.full((4, 2), 100.0, dtype=H)), {}),
    ("product_overflow", "aten.mm", (T([[INF]]), T([[1.0]])), {}),  # an infinite input is not an overflow
    ("arithmetic_overflow", "aten.mul.Tensor", (T([200.0], dtype=H), T([200.0], dtype=H)), {}),
    ("reduction_overflow", "aten.mean.default", (torch.full((4,), 4e4, dtype=H),), {}),  # float32 accumulation
    ("cast_overflow", "aten._to_copy", (T([6e4]),), {"dtype": H}),
    ("cast_overflow", "aten._to_copy", (T([3e38]),), {"dtype": torch.float64}),
    ("variance_overflow", "aten.native_layer_norm", (torch.randn(2, 8) * 1e17, [8], None, None, 1e-5), {}),
    ("variance_overflow", "aten.native_layer_norm", (torch.randn(2, 8, dtype=H) * 3e4, [8], None, None, 1e-5), {}),
    ("soft_margin_overflow", "aten.soft_margin_loss", (T([-80.0]), T([1.0]), 1), {}),
    ("fp16_probability_at_bound", "aten.binary_cross_entropy", (T([0.0, 1.0]), T([1.0, 0.0])), {}),  # float32
    ("fp16_probability_at_bound", "aten.binary_cross_entropy", (T([0.0, 1.0], dtype=H), T([0.0, 1.0], dtype=H)),
     {}),
    ("empty_input", "aten.mean.default", (torch.zeros(1),), {}),
    ("all_neg_inf_row", "aten._softmax", (_rows([-INF, 0.0], [0.0, -INF]), -1, False), {}),
    ("all_neg_inf_row", "aten.nll_loss_forward", (_rows([-INF, -INF]), T([0]), None, 1, -100), {}),
    ("too_few_for_correction", "aten.std.correction", (torch.randn(3, 2), [-1]), {}),
    ("too_few_for_correction", "aten.std.correction", (torch.randn(3, 1), [-1]), {"correction": 0}),
    ("batch_too_small_for_correction", "aten.std.correction", (torch.randn(3, 1), [-1]), {}),
    ("constant_row_eps0", "aten.native_layer_norm", (_const(1), [4], None, None, 1e-5), {}),
    ("constant_row_eps0", "aten.native_layer_norm", (torch.arange(8.0).reshape(2, 4), [4], None, None, 0.0), {}),
    ("zero_row_eps0", "rms_norm", (_rows([0.0, 0.0]), [2], None), {"eps": None}),
    ("running_var_nonpositive", "aten.native_batch_norm", (torch.randn(3, 4), None, None, torch.zeros(4),
                                                           T([1.0, -1.0, 1.0, 1.0]), True, 0.1, 1e-5), {}),
    ("zero_norm_vector", "aten.linalg_vector_norm", (_rows([0.0, 1e-30]), 2, [-1]), {}),
    ("all_keys_masked", "aten._native_multi_head_attention", (torch.randn(3, 4, 8), None, None, 8, 2, None, None,
                                                              None, None, _KPM), {}),
    ("all_ignored_targets", "aten.nll_loss_forward", (torch.randn(3, 4), T([-100, 1, -100]), None, 1, -100), {}),
    ("all_ignored_targets", "aten.nll_loss_forward", (torch.randn(3, 4), T([-100, -100, -100]), None, 2, -100), {}),
    ("zero_total_weight", "aten.nll_loss_forward", (torch.randn(3, 4), T([0, 1, -100]), T([0.0, 1, 1, 1]), 1, -100),
     {}),
    ("neg_inf_at_target", "aten.nll_loss_forward", (_rows([0.0, -INF]), T([0]), None, 1, -100), {}),
    ("ctc_impossible_alignment", "aten._ctc_loss", (torch.randn(3, 2, 5), T([[1, 2, 3, 4], [1, 1, 0, 0]]), [3, 2],
                                                    [4, 2], 0, True), {}),  # zero_infinity
    ("ctc_impossible_alignment", "aten._ctc_loss", (torch.randn(4, 1, 5), T([[1, 1]]), [4], [2], 0, False), {}),
    ("probability_outside_unit_interval", "aten.binary_cross_entropy", (T([0.0, 1.0]), T([1.0, 1.0])), {}),
    ("repeated_eigenvalues", "aten._linalg_eigh", (torch.diag(T([1.0, 2.0, 3.0])), "L", True), {}),
    ("repeated_eigenvalues", "aten._linalg_eigh", (torch.eye(3), "L", False), {}),  # eigenvalues only
    ("degenerate_singular_values", "aten._linalg_svd", (torch.eye(3), False, False), {}),  # svdvals
    ("degenerate_singular_values", "aten._linalg_svd", (torch.diag(T([1.0, 2.0, 0.0])), False, True), {}),
    ("singular_matrix", "aten.linalg_inv_ex", (torch.eye(2),), {}),
    ("not_positive_definite", "aten.linalg_cholesky_ex", (torch.eye(2),), {}),
    ("nonpositive_determinant", "logdet", (torch.eye(2),), {}),
    ("eps_flushes_to_zero", "Adam", (T([1.0, 2.0], dtype=torch.float16), {"eps": 1e-4}, {}), {}),
    ("eps_flushes_to_zero", "Adam", (T([1.0, 2.0]), {"eps": 1e-8}, {}), {}),  # float32 holds 1e-8
]


@pytest.mark.parametrize(("check_id", "op", "args", "kwargs", "rows"), HITS, ids=[h[0] for h in HITS])
def test_check_fires(check_id: str, op: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                     rows: tuple[int, ...] | None) -> None:
    evidence = run_check(check_id, op, args, kwargs, strict=True)
    assert isinstance(evidence, Evidence), f"{check_id} did not fire on {op}"
    assert evidence.text and str(evidence) == evidence.text
    assert evidence.rows == rows, evidence.text


@pytest.mark.parametrize(("check_id", "op", "args", "kwargs"), MISSES, ids=[m[0] for m in MISSES])
def test_check_stays_quiet(check_id: str, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    evidence = run_check(check_id, op, args, kwargs, strict=True)
    assert evidence is None, evidence


def test_every_check_has_a_hit_and_a_miss() -> None:
    assert {h[0] for h in HITS} == set(CHECKS)
    assert {m[0] for m in MISSES} == set(CHECKS)


def test_evidence_names_the_measured_values() -> None:
    x = _rows([1.0, 2.0], [3.0, 4.0], [0.0, 1.0])
    assert run_check("input_nonpositive", "aten.log", (x,)).text == "min input 0.0 <= 0 in rows [2]"
    over = run_check("variance_overflow", "aten.native_layer_norm",
                     (torch.randn(4, 8, generator=torch.Generator().manual_seed(0)) * 1e21, [8], None, None, 1e-5))
    assert "float32 max 3.403e+38" in over.text and "overflow" in over.text and "domain" in over.text
    assert run_check("all_ignored_targets", "aten.nll_loss_forward",
                     (torch.randn(2, 3), T([-100, -100]), None, 1, -100)).text.startswith(
        "all 2 targets equal ignore_index -100")


def test_unknown_check_and_tolerated_layouts() -> None:
    with pytest.raises(KeyError, match="unknown check 'nope'"):
        run_check("nope", "aten.log", (T([1.0]),))
    # F.cross_entropy's Python-level arguments are not nll_loss_forward's: not strict -> None, strict -> raises
    args = (torch.randn(2, 3), T([-100, -100]), None, None, -100, None, "mean", 0.0)
    assert run_check("all_ignored_targets", "nll_loss", args) is None
    with pytest.raises(TypeError):
        run_check("all_ignored_targets", "nll_loss", args, strict=True)
