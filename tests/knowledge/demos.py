"""One tiny computation per condition of the table, making torch do what the condition claims; and one per
point the table says torch keeps finite (entries without conditions, and claims made in notes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.knowledge.harness import Demo

T = torch.tensor
INF = float("inf")
H = torch.float16


def _rows(*rows: list[float]) -> torch.Tensor:
    return T(list(rows))


def _logits(masked: tuple[int, int] | None = None, row: int | None = None) -> torch.Tensor:
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    if masked is not None:
        x[masked] = -INF
    if row is not None:
        x[row] = -INF
    return x


_IGNORED = torch.full((4,), -100)
_ZEROS = torch.zeros(4, dtype=torch.long)
_EMPTY = torch.zeros(0, 5)
_EMPTY_T = torch.zeros(0, dtype=torch.long)
_SINGULAR = T([[1.0, 2.0], [2.0, 4.0]])


def _const_row() -> torch.Tensor:
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    x[1] = 2.0
    return x


def _zero_row() -> torch.Tensor:
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    x[0] = 0.0
    return x


def _mha(x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    padding = torch.zeros(3, 4, dtype=torch.bool)
    padding[1] = True
    with torch.no_grad():
        return mha(x, x, x, key_padding_mask=padding, need_weights=False)[0]


def _mha_slow(x: torch.Tensor, need_weights: bool = False) -> torch.Tensor:
    """MultiheadAttention with grad enabled (off the fast path), every key of sample 1 masked."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    padding = torch.zeros(3, 4, dtype=torch.bool)
    padding[1] = True
    return mha(x, x, x, key_padding_mask=padding, need_weights=need_weights)[0]


def _encoder_layer(x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0).eval()
    padding = torch.zeros(3, 4, dtype=torch.bool)
    padding[1] = True
    with torch.no_grad():
        return layer(x, src_key_padding_mask=padding)


def _big_projection(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(1e30)
    return module


def _adaptive(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    return nn.AdaptiveLogSoftmaxWithLoss(5, 10, [4])(x, target).loss


def _adaptive_big(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    return _big_projection(nn.AdaptiveLogSoftmaxWithLoss(5, 10, [4]))(x, target).loss


def _lce(x: torch.Tensor, target: torch.Tensor, big: bool = False) -> torch.Tensor:
    torch.manual_seed(0)
    loss = nn.LinearCrossEntropyLoss(5, 3)
    return (_big_projection(loss) if big else loss)(x, target)


def _sqrt_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).sum(-1).sqrt()


_BIG = torch.full((2, 5), 3e38)

# (entry name, condition id) -> Demo
DEMOS: dict[tuple[str, str], Demo] = {
    # ------------------------------------------------------------------------------------------ losses
    ("L1Loss", "empty_mean"): Demo(nn.L1Loss(), (_EMPTY, _EMPTY)),
    ("L1Loss", "overflow"): Demo(nn.L1Loss(), (_BIG, -_BIG)),
    ("MSELoss", "empty_mean"): Demo(nn.MSELoss(), (_EMPTY, _EMPTY)),
    ("MSELoss", "square_overflow"): Demo(nn.MSELoss(), (torch.full((2, 3), 2e19), torch.zeros(2, 3))),
    ("CrossEntropyLoss", "all_ignored"): Demo(nn.CrossEntropyLoss(), (_logits(), _IGNORED)),
    ("CrossEntropyLoss", "zero_weight"): Demo(nn.CrossEntropyLoss(weight=T([0.0, 1, 1, 1, 1])), (_logits(), _ZEROS),
                                              grad=(0,)),
    ("CrossEntropyLoss", "all_masked_row"): Demo(nn.CrossEntropyLoss(), (_logits(row=1), _ZEROS)),
    ("CrossEntropyLoss", "target_masked"): Demo(nn.CrossEntropyLoss(), (_logits(masked=(1, 0)), _ZEROS)),
    ("CrossEntropyLoss", "smoothing_over_masked"): Demo(nn.CrossEntropyLoss(label_smoothing=0.1),
                                                        (_logits(masked=(1, 0)), _ZEROS + 1)),
    ("CrossEntropyLoss", "soft_target_masked"): Demo(nn.CrossEntropyLoss(),
                                                     (_logits(masked=(1, 0)), F.one_hot(_ZEROS + 1, 5).float()),
                                                     grad=(0,)),
    ("CrossEntropyLoss", "empty_mean"): Demo(nn.CrossEntropyLoss(), (_EMPTY, _EMPTY_T)),
    ("CrossEntropyLoss", "overflow"): Demo(nn.CrossEntropyLoss(), (T([[3e38, -3e38]]), T([1]))),
    ("NLLLoss", "all_ignored"): Demo(nn.NLLLoss(), (_logits().log_softmax(-1), _IGNORED)),
    ("NLLLoss", "zero_weight"): Demo(nn.NLLLoss(weight=T([0.0, 1, 1, 1, 1])), (_logits().log_softmax(-1), _ZEROS),
                                     grad=(0,)),
    ("NLLLoss", "log_of_zero"): Demo(lambda p, t: nn.NLLLoss()(torch.log(p), t), (_rows([0.0, 1.0], [0.5, 0.5]),
                                                                                     T([0, 1]))),
    ("NLLLoss", "empty_mean"): Demo(nn.NLLLoss(), (_EMPTY, _EMPTY_T)),
    ("CTCLoss", "impossible_alignment"): Demo(
        lambda x: nn.CTCLoss()(x.log_softmax(-1), T([[1, 2, 3, 4], [1, 2, 0, 0]]), [3, 3], [4, 2]),
        (torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(0)),)),
    ("PoissonNLLLoss", "exp_overflow"): Demo(nn.PoissonNLLLoss(), (T([89.0, 1.0]), T([1.0, 1.0]))),
    ("PoissonNLLLoss", "zero_rate_eps0"): Demo(nn.PoissonNLLLoss(log_input=False, eps=0.0), (T([0.0, 1.0]),
                                                                                            T([1.0, 1.0]))),
    ("PoissonNLLLoss", "negative_rate"): Demo(nn.PoissonNLLLoss(log_input=False), (T([-1.0, 1.0]), T([1.0, 1.0]))),
    ("PoissonNLLLoss", "empty_mean"): Demo(nn.PoissonNLLLoss(), (_EMPTY, _EMPTY)),
    ("GaussianNLLLoss", "zero_variance_eps0"): Demo(nn.GaussianNLLLoss(eps=0.0), (T([[0.0, 1]]), T([[1.0, 1]]),
                                                                                 T([[0.0, 1]]))),
    ("GaussianNLLLoss", "negative_variance"): Demo(nn.GaussianNLLLoss(), (T([[0.0, 1]]), T([[1.0, 1]]),
                                                                          T([[-1.0, 1]]))),
    ("GaussianNLLLoss", "empty_mean"): Demo(nn.GaussianNLLLoss(), (_EMPTY, _EMPTY, _EMPTY)),
    ("KLDivLoss", "zero_prob_zero_target"): Demo(lambda p, t: nn.KLDivLoss(reduction="sum")(p.log(), t),
                                                 (T([[0.0, 1.0]]), T([[0.0, 1.0]]))),
    ("KLDivLoss", "zero_prob_positive_target"): Demo(lambda p, t: nn.KLDivLoss(reduction="sum")(p.log(), t),
                                                     (T([[0.0, 1.0]]), T([[0.5, 0.5]]))),
    ("KLDivLoss", "negative_target"): Demo(nn.KLDivLoss(reduction="sum"), (T([[-1.0, -1.0]]), T([[-0.5, 1.5]]))),
    ("KLDivLoss", "log_target_both_neg_inf"): Demo(nn.KLDivLoss(reduction="sum", log_target=True),
                                                   (T([[-INF, 0.0]]), T([[-INF, 0.0]])), grad=(0,)),
    ("KLDivLoss", "empty_mean"): Demo(nn.KLDivLoss(reduction="batchmean"), (_EMPTY, _EMPTY)),
    ("BCELoss", "out_of_range"): Demo(nn.BCELoss(), (T([1.5, 0.5]), T([1.0, 1.0]))),
    ("BCELoss", "fp16_saturated"): Demo(nn.BCELoss(reduction="none"), (T([0.0, 1.0, 0.5], dtype=H),
                                                                       T([1.0, 0.0, 1.0], dtype=H)), grad=(0,)),
    ("BCELoss", "empty_mean"): Demo(nn.BCELoss(), (_EMPTY, _EMPTY)),
    ("BCEWithLogitsLoss", "overflow"): Demo(nn.BCEWithLogitsLoss(pos_weight=T([1e38])), (T([-100.0]), T([1.0]))),
    ("BCEWithLogitsLoss", "empty_mean"): Demo(nn.BCEWithLogitsLoss(), (_EMPTY, _EMPTY)),
    ("MarginRankingLoss", "empty_mean"): Demo(nn.MarginRankingLoss(), (torch.zeros(0), torch.zeros(0),
                                                                       torch.zeros(0))),
    ("MarginRankingLoss", "overflow"): Demo(nn.MarginRankingLoss(), (torch.full((2,), 3e38), torch.full((2,), -3e38),
                                                                     -torch.ones(2))),
    ("HingeEmbeddingLoss", "empty_mean"): Demo(nn.HingeEmbeddingLoss(), (_EMPTY, _EMPTY)),
    ("HingeEmbeddingLoss", "overflow"): Demo(nn.HingeEmbeddingLoss(), (-_BIG, -torch.ones(2, 5))),
    ("MultiLabelMarginLoss", "overflow"): Demo(nn.MultiLabelMarginLoss(), (T([[3e38, -3e38, 0, 0, 0]]),
                                                                           T([[1, -1, 0, 0, 0]]))),
    ("HuberLoss", "empty_mean"): Demo(nn.HuberLoss(), (_EMPTY, _EMPTY)),
    ("HuberLoss", "overflow"): Demo(nn.HuberLoss(), (_BIG, -_BIG)),
    ("SmoothL1Loss", "empty_mean"): Demo(nn.SmoothL1Loss(), (_EMPTY, _EMPTY)),
    ("SmoothL1Loss", "overflow"): Demo(nn.SmoothL1Loss(), (_BIG, -_BIG)),
    ("SoftMarginLoss", "exp_overflow"): Demo(nn.SoftMarginLoss(), (T([-100.0, 1.0]), T([1.0, 1.0])), grad=(0,)),
    ("SoftMarginLoss", "empty_mean"): Demo(nn.SoftMarginLoss(), (_EMPTY, _EMPTY), grad=(0,)),
    ("MultiLabelSoftMarginLoss", "empty_mean"): Demo(nn.MultiLabelSoftMarginLoss(), (_EMPTY, _EMPTY)),
    ("MultiLabelSoftMarginLoss", "overflow"): Demo(nn.MultiLabelSoftMarginLoss(), (-_BIG, torch.ones(2, 5))),
    ("CosineEmbeddingLoss", "square_overflow"): Demo(nn.CosineEmbeddingLoss(), (torch.full((2, 5), 1e20),
                                                                                torch.full((2, 5), 1e20),
                                                                                torch.ones(2)), grad=(0, 1)),
    ("CosineEmbeddingLoss", "empty_mean"): Demo(nn.CosineEmbeddingLoss(), (_EMPTY, _EMPTY, torch.zeros(0))),
    ("MultiMarginLoss", "overflow"): Demo(nn.MultiMarginLoss(), (T([[3e38, -3e38, 0, 0, 0]]), T([1]))),
    ("TripletMarginLoss", "norm_overflow"): Demo(nn.TripletMarginLoss(), (torch.full((2, 5), 1e20),
                                                                          torch.zeros(2, 5), torch.zeros(2, 5))),
    ("TripletMarginLoss", "empty_mean"): Demo(nn.TripletMarginLoss(), (_EMPTY, _EMPTY, _EMPTY)),
    ("TripletMarginWithDistanceLoss", "sqrt_distance_at_zero"): Demo(
        nn.TripletMarginWithDistanceLoss(distance_function=_sqrt_distance),
        (torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3))),
    ("TripletMarginWithDistanceLoss", "norm_overflow"): Demo(nn.TripletMarginWithDistanceLoss(),
                                                             (torch.full((2, 5), 1e20), torch.zeros(2, 5),
                                                              torch.zeros(2, 5))),
    ("TripletMarginWithDistanceLoss", "empty_mean"): Demo(nn.TripletMarginWithDistanceLoss(),
                                                          (_EMPTY, _EMPTY, _EMPTY)),
    ("AdaptiveLogSoftmaxWithLoss", "empty_mean"): Demo(_adaptive, (_EMPTY, _EMPTY_T)),
    ("AdaptiveLogSoftmaxWithLoss", "overflow"): Demo(_adaptive_big, (torch.full((2, 5), 1e10), T([1, 6]))),
    ("LinearCrossEntropyLoss", "all_ignored"): Demo(_lce, (torch.randn(2, 5), T([-100, -100]))),
    ("LinearCrossEntropyLoss", "empty_mean"): Demo(_lce, (_EMPTY, _EMPTY_T)),
    ("LinearCrossEntropyLoss", "overflow"): Demo(lambda x, t: _lce(x, t, big=True),
                                                 (torch.full((2, 5), 1e10), T([0, 1]))),
    # ----------------------------------------------------------------------------------------------- ops
    ("log", "nonpositive"): Demo(torch.log, (_rows([1.0, 2.0], [0.0, -1.0]),)),
    ("log", "masked_zero"): Demo(lambda x: torch.where(x > 0, torch.log(x), torch.zeros_like(x)), (T([0.0, 2.0]),)),
    ("log2", "nonpositive"): Demo(torch.log2, (T([1.0, 0.0, -1.0]),)),
    ("log10", "nonpositive"): Demo(torch.log10, (T([1.0, 0.0, -1.0]),)),
    ("log1p", "at_most_minus_one"): Demo(torch.log1p, (T([0.0, -1.0, -2.0]),)),
    ("xlogy", "y_nonpositive"): Demo(torch.xlogy, (T([1.0, 1.0]), T([0.0, -1.0]))),
    ("xlogy", "y_zero_gradient"): Demo(torch.xlogy, (T([0.0]), T([0.0])), grad=(1,)),
    ("special_xlog1py", "y_at_most_minus_one"): Demo(torch.special.xlog1py, (T([1.0, 1.0]), T([-1.0, -2.0]))),
    ("special_xlog1py", "y_minus_one_gradient"): Demo(torch.special.xlog1py, (T([0.0]), T([-1.0])), grad=(1,)),
    ("logit", "outside_open_unit"): Demo(torch.logit, (T([0.0, 1.0, 0.5]),)),
    ("sqrt", "negative"): Demo(torch.sqrt, (T([1.0, -1.0]),)),
    ("sqrt", "zero_gradient"): Demo(torch.sqrt, (T([0.0, 4.0]),)),
    ("rsqrt", "nonpositive"): Demo(torch.rsqrt, (T([1.0, 0.0, -1.0]),)),
    ("pow", "zero_to_negative"): Demo(lambda x: x.pow(-1.0), (T([0.0, 2.0]),)),
    ("pow", "negative_to_fractional"): Demo(lambda x: x.pow(0.5), (T([-1.0, 4.0]),)),
    ("pow", "zero_below_one_gradient"): Demo(lambda x: x.pow(0.5), (T([0.0, 4.0]),)),
    ("pow", "overflow"): Demo(lambda x: x.pow(30.0), (T([100.0, 1.0]),)),
    ("div", "zero_over_zero"): Demo(torch.div, (T([0.0, 1.0]), T([0.0, 2.0]))),
    ("div", "by_zero"): Demo(torch.div, (T([1.0, 1.0]), T([0.0, 2.0]))),
    ("div", "overflow"): Demo(torch.div, (T([1e30]), T([1e-30]))),
    ("reciprocal", "zero"): Demo(torch.reciprocal, (T([0.0, 2.0]),)),
    ("fmod", "by_zero"): Demo(torch.fmod, (T([1.0, 0.0]), T([0.0, 0.0]))),
    ("remainder", "by_zero"): Demo(torch.remainder, (T([1.0, 0.0]), T([0.0, 0.0]))),
    ("acos", "outside_unit"): Demo(torch.acos, (T([2.0, 0.5]),)),
    ("acos", "boundary_gradient"): Demo(torch.acos, (T([1.0, -1.0, 0.5]),)),
    ("asin", "outside_unit"): Demo(torch.asin, (T([2.0, 0.5]),)),
    ("asin", "boundary_gradient"): Demo(torch.asin, (T([1.0, -1.0, 0.5]),)),
    ("atanh", "boundary"): Demo(torch.atanh, (T([1.0, 0.5]),)),
    ("atanh", "outside_unit"): Demo(torch.atanh, (T([2.0, 0.5]),)),
    ("acosh", "below_one"): Demo(torch.acosh, (T([0.5, 2.0]),)),
    ("acosh", "one_gradient"): Demo(torch.acosh, (T([1.0, 2.0]),)),
    ("lgamma", "pole"): Demo(torch.lgamma, (T([0.0, 2.0]),)),
    ("digamma", "pole"): Demo(torch.digamma, (T([0.0, 2.0]),)),
    ("polygamma", "pole"): Demo(lambda x: torch.polygamma(1, x), (T([0.0, 2.0]),)),
    ("erfinv", "outside_open_unit"): Demo(torch.erfinv, (T([1.0, -1.0, 2.0, 0.5]),)),
    ("exp", "overflow"): Demo(torch.exp, (T([89.0, 1.0]),)),
    ("exp2", "overflow"): Demo(torch.exp2, (T([129.0, 1.0]),)),
    ("expm1", "overflow"): Demo(torch.expm1, (T([89.0, 1.0]),)),
    ("cosh", "overflow"): Demo(torch.cosh, (T([90.0, 1.0]),)),
    ("sinh", "overflow"): Demo(torch.sinh, (T([90.0, 1.0]),)),
    ("_softmax", "all_masked_row"): Demo(lambda x: torch.softmax(x, -1), (_rows([-INF, -INF], [0.0, 1.0]),)),
    ("_log_softmax", "all_masked_row"): Demo(lambda x: torch.log_softmax(x, -1), (_rows([-INF, -INF], [0.0, 1.0]),)),
    ("logsumexp", "all_masked_row"): Demo(lambda x: torch.logsumexp(x, -1), (_rows([-INF, -INF], [0.0, 1.0]),)),
    ("_masked_softmax", "all_masked"): Demo(
        lambda x: torch.ops.aten._masked_softmax(x, T([[True, True, True], [False, True, False]]), 1, 0),
        (torch.randn(2, 3),), grad=()),
    # a TorchFunctionMode would refuse the fast path ("some Tensor argument has_torch_function")
    ("_native_multi_head_attention", "all_keys_masked"): Demo(_mha, (torch.randn(3, 4, 8),), grad=(),
                                                              functions=False),
    ("_transformer_encoder_layer_fwd", "all_keys_masked"): Demo(_encoder_layer, (torch.randn(3, 4, 8),), grad=(),
                                                                functions=False),
    ("std", "batch_of_one"): Demo(lambda x: x.std(0), (torch.randn(1, 4),)),
    ("std", "too_few"): Demo(lambda x: x.std(-1), (torch.randn(3, 1),)),
    ("var", "batch_of_one"): Demo(lambda x: x.var(0), (torch.randn(1, 4),)),
    ("var", "too_few"): Demo(lambda x: x.var(-1), (torch.randn(3, 1),)),
    ("var", "overflow"): Demo(lambda x: x.var(-1), (torch.randn(2, 8) * 1e20,)),
    ("std_mean", "batch_of_one"): Demo(lambda x: torch.std_mean(x, 0), (torch.randn(1, 4),)),
    ("std_mean", "too_few"): Demo(lambda x: torch.std_mean(x, -1), (torch.randn(3, 1),)),
    ("var_mean", "batch_of_one"): Demo(lambda x: torch.var_mean(x, 0), (torch.randn(1, 4),)),
    ("var_mean", "too_few"): Demo(lambda x: torch.var_mean(x, -1), (torch.randn(3, 1),)),
    ("var_mean", "overflow"): Demo(lambda x: torch.var_mean(x, -1), (torch.randn(2, 8) * 1e20,)),
    ("mean", "empty"): Demo(lambda x: x.mean(), (torch.zeros(0),)),
    ("mean", "overflow"): Demo(lambda x: x.mean(), (torch.full((4,), 2e38),)),
    ("sum", "overflow"): Demo(lambda x: x.sum(), (torch.full((4,), 3e4, dtype=H),)),
    ("cumsum", "overflow"): Demo(lambda x: x.cumsum(0), (torch.full((4,), 3e4, dtype=H),)),
    ("prod", "overflow"): Demo(lambda x: x.prod(), (torch.full((4,), 1e10),)),
    ("cumprod", "overflow"): Demo(lambda x: x.cumprod(0), (torch.full((4,), 1e10),)),
    ("native_layer_norm", "constant_row_eps0"): Demo(lambda x: F.layer_norm(x, (4,), eps=0.0), (_const_row(),)),
    ("native_layer_norm", "variance_overflow"): Demo(lambda x: F.layer_norm(x, (8,)), (torch.randn(4, 8) * 1e21,)),
    ("native_group_norm", "constant_group_eps0"): Demo(lambda x: F.group_norm(x, 2, eps=0.0), (_const_row(),)),
    ("native_group_norm", "variance_overflow"): Demo(lambda x: F.group_norm(x, 2), (torch.randn(2, 4, 3) * 1e21,)),
    ("native_batch_norm", "negative_running_var"): Demo(
        lambda x, v: F.batch_norm(x, torch.zeros(4), v, training=False), (torch.randn(3, 4), T([1.0, 1.0, -1.0, 1.0])),
        grad=(0,)),
    ("rms_norm", "zero_row_eps0"): Demo(lambda x: F.rms_norm(x, (4,), eps=0.0), (_zero_row(),)),
    ("linalg_eigh", "repeated_eigenvalues"): Demo(lambda a: torch.linalg.eigh(a)[1], (torch.eye(3),)),
    ("linalg_eig", "repeated_eigenvalues"): Demo(lambda a: torch.linalg.eig(a)[1].real, (torch.eye(3),)),
    ("linalg_svd", "degenerate_singular_values"): Demo(lambda a: torch.linalg.svd(a)[0], (torch.eye(3),)),
    ("linalg_cholesky_ex", "not_positive_definite"): Demo(torch.linalg.cholesky, (_SINGULAR + T([[0.0, 1], [1, 0]]),)),
    ("linalg_inv_ex", "singular_raises"): Demo(torch.linalg.inv, (_SINGULAR,)),
    ("linalg_inv_ex", "singular_inv_ex"): Demo(lambda a: torch.linalg.inv_ex(a)[0], (_SINGULAR,)),
    ("linalg_solve_ex", "singular_raises"): Demo(lambda a: torch.linalg.solve(a, torch.ones(2, 1)), (_SINGULAR,)),
    ("linalg_solve_ex", "singular_solve_ex"): Demo(lambda a: torch.linalg.solve_ex(a, torch.ones(2, 1))[0],
                                                   (_SINGULAR,)),
    ("linalg_slogdet", "singular"): Demo(lambda a: torch.linalg.slogdet(a)[1], (_SINGULAR,)),
    ("logdet", "nonpositive_determinant"): Demo(torch.logdet, (T([[-1.0, 0.0], [0.0, 1.0]]),)),
    ("linalg_qr", "rank_deficient"): Demo(lambda a: torch.linalg.qr(a)[0], (torch.zeros(3, 3),)),
    ("linalg_vector_norm", "overflow"): Demo(torch.linalg.vector_norm, (T([1e20, 1e20]),)),
    ("linalg_vector_norm", "zero_vector_second_order"): Demo(torch.linalg.vector_norm, (torch.zeros(3),),
                                                             second_order=True),
    ("norm", "overflow"): Demo(F.pairwise_distance, (torch.full((1, 3), 1e20), torch.zeros(1, 3))),
    ("_cdist_forward", "overflow"): Demo(torch.cdist, (torch.full((1, 3), 1e20), torch.zeros(1, 3))),
    ("mm", "overflow"): Demo(torch.mm, (torch.full((2, 4), 300.0, dtype=H), torch.full((4, 2), 300.0, dtype=H))),
    ("bmm", "overflow"): Demo(torch.bmm, (torch.full((1, 2, 4), 300.0, dtype=H),
                                          torch.full((1, 4, 2), 300.0, dtype=H))),
    ("addmm", "overflow"): Demo(F.linear, (torch.full((2, 4), 1e20), torch.full((3, 4), 1e20), torch.zeros(3))),
    ("baddbmm", "overflow"): Demo(torch.baddbmm, (torch.zeros(1, 2, 2), torch.full((1, 2, 4), 1e20),
                                                  torch.full((1, 4, 2), 1e20))),
    ("convolution", "overflow"): Demo(F.conv1d, (torch.full((1, 2, 4), 1e20), torch.full((3, 2, 2), 1e20))),
    ("mul", "zero_times_inf"): Demo(torch.mul, (T([0.0, 1.0]), T([INF, 2.0]))),
    ("mul", "overflow"): Demo(torch.mul, (torch.full((2,), 300.0, dtype=H), torch.full((2,), 300.0, dtype=H))),
    ("add", "inf_minus_inf"): Demo(torch.add, (T([INF, 1.0]), T([-INF, 1.0]))),
    ("add", "overflow"): Demo(torch.add, (T([3e38, 1.0]), T([3e38, 1.0]))),
    ("sub", "inf_minus_inf"): Demo(torch.sub, (T([INF, 1.0]), T([INF, 1.0]))),
    ("sub", "overflow"): Demo(torch.sub, (T([3e38, 1.0]), T([-3e38, 1.0]))),
    ("_to_copy", "cast_overflow"): Demo(lambda x: x.half(), (T([7e4, 1.0]),)),
}


def _sdpa_fully_masked(q: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(3, 1, 5, 5, dtype=torch.bool)
    mask[1] = False
    return F.scaled_dot_product_attention(q, q, q, attn_mask=mask)


# Points the table says torch keeps finite, in both phases: (entry name, what) -> Demo.
FINITE: dict[tuple[str, str], Demo] = {
    ("_safe_softmax", "entry"): Demo(_sdpa_fully_masked, (torch.randn(3, 2, 5, 4),)),
    ("linalg_det", "entry"): Demo(torch.linalg.det, (_SINGULAR,)),
    ("_pdist_forward", "entry"): Demo(torch.pdist, (T([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]),)),
    ("atan2", "entry"): Demo(torch.atan2, (T([0.0, 1.0]), T([0.0, 1.0]))),
    ("where", "entry"): Demo(lambda x: torch.where(x > 0, x, torch.zeros_like(x)), (T([-1.0, 0.0, 2.0]),)),
    ("log_sigmoid_forward", "entry"): Demo(F.logsigmoid, (T([-1000.0, 0.0, 1000.0]),)),
    # claims made in notes
    ("_softmax", "note"): Demo(lambda x: torch.softmax(x, -1), (torch.full((4,), 6e4, dtype=H),)),
    ("std", "note"): Demo(lambda x: x.std(-1), (T([[1e30, -1e30]]),)),
    ("prod", "note"): Demo(lambda x: x.prod(), (T([2.0, 0.0, 0.0, 3.0]),)),
    ("cumprod", "note"): Demo(lambda x: x.cumprod(0), (T([2.0, 0.0, 3.0, 0.0]),)),
    ("_native_multi_head_attention", "note"): Demo(_mha_slow, (torch.randn(3, 4, 8),)),
    ("native_batch_norm", "note"): Demo(lambda x: F.batch_norm(x, None, None, training=True),
                                        (torch.randn(8, 4) * 1e30,)),
    ("native_layer_norm", "note"): Demo(lambda x: F.layer_norm(x, (4,)), (T([[3e4, -3e4, 1.0, 2.0]], dtype=H),)),
    ("rms_norm", "note"): Demo(lambda x: F.rms_norm(x, (4,)), (_zero_row(),)),
    ("linalg_svd", "note"): Demo(torch.linalg.svdvals, (torch.eye(3),)),
    ("linalg_vector_norm", "note"): Demo(lambda x: torch.linalg.vector_norm(x, dim=-1), (torch.zeros(2, 3),)),
    ("linalg_vector_norm", "normalize"): Demo(lambda x: F.normalize(x, dim=-1), (torch.zeros(2, 3),)),
    ("norm", "note"): Demo(F.pairwise_distance, (torch.zeros(2, 3), torch.zeros(2, 3))),
    ("_cdist_forward", "note"): Demo(torch.cdist, (T([[0.0, 0.0], [1.0, 1.0]]), T([[0.0, 0.0]]))),
    ("_cdist_forward", "mm path"): Demo(lambda a: torch.cdist(a, a, compute_mode="use_mm_for_euclid_dist"),
                                        (torch.randn(4, 3),)),
    ("GaussianNLLLoss", "note"): Demo(nn.GaussianNLLLoss(), (T([[0.0, 1]]), T([[1.0, 1]]), T([[0.0, 1]]))),
    ("BCELoss", "note"): Demo(nn.BCELoss(), (T([0.0, 1.0, 0.5]), T([1.0, 0.0, 1.0])), grad=(0,)),
    ("BCEWithLogitsLoss", "note"): Demo(nn.BCEWithLogitsLoss(), (T([-1e30, 1e30, 0.0]), T([1.0, 0.0, 1.0]))),
    ("MultiLabelSoftMarginLoss", "note"): Demo(nn.MultiLabelSoftMarginLoss(), (T([[-1e30, 1e30]]), T([[1.0, 0.0]]))),
    ("CosineEmbeddingLoss", "note"): Demo(nn.CosineEmbeddingLoss(), (torch.zeros(2, 3), torch.zeros(2, 3),
                                                                     torch.ones(2)), grad=(0, 1)),
    ("TripletMarginLoss", "note"): Demo(nn.TripletMarginLoss(), (torch.zeros(2, 3), torch.zeros(2, 3),
                                                                 torch.zeros(2, 3))),
    ("TripletMarginWithDistanceLoss", "note"): Demo(nn.TripletMarginWithDistanceLoss(),
                                                    (torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3))),
    ("SmoothL1Loss", "note"): Demo(nn.SmoothL1Loss(beta=0.0), (torch.zeros(2, 3), torch.zeros(2, 3))),
    ("HuberLoss", "note"): Demo(nn.HuberLoss(), (torch.full((2, 3), 1e30), torch.zeros(2, 3))),
    ("AdaptiveLogSoftmaxWithLoss", "note"): Demo(_adaptive, (torch.randn(3, 5) * 1e3, T([1, 6, 9]))),
}

# Claims in notes that something is non-finite: (entry name, what) -> Demo whose forward must be non-finite.
NONFINITE: dict[tuple[str, str], Demo] = {
    ("_native_multi_head_attention", "need_weights=True"): Demo(lambda x: _mha_slow(x, need_weights=True),
                                                                (torch.randn(3, 4, 8),)),
    ("log_sigmoid_forward", "log(sigmoid(x))"): Demo(lambda x: torch.log(torch.sigmoid(x)), (T([-89.0, 0.0]),)),
}

# Notes whose claim is that torch raises.
RAISES: dict[tuple[str, str], Demo] = {
    ("native_batch_norm", "eps=0 in training"): Demo(lambda x: F.batch_norm(x, None, None, training=True, eps=0.0),
                                                     (torch.ones(3, 4),)),
    ("native_batch_norm", "batch of one"): Demo(lambda x: nn.BatchNorm1d(4)(x), (torch.randn(1, 4),)),
    ("AdaptiveLogSoftmaxWithLoss", "target out of range"): Demo(_adaptive, (torch.randn(2, 5), T([1, 10]))),
}
