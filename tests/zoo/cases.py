"""The broken-model zoo: small models that go non-finite in one known way, with the answer a good diagnosis
must give, and clean models that must stay clean.

Each :class:`Case` builds ``(model, batches)`` deterministically. The expected answer follows the report's
contract: ``module`` is a qualified name from ``named_modules()`` (``"<input>"`` for the batch itself,
``"<TypeName>"`` for a module built inside forward), ``cause`` is from the contract's vocabulary,
``samples`` are the rows of the failing batch that alone reproduce it (``None`` when the failure does not
depend on particular rows), ``phase`` is where it first shows (``"backward"``: the output is finite, a
parameter's gradient is not). ``tests/zoo/test_zoo_reproduces.py`` pins every case to torch's behaviour."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tests.zoo import models as M

Built = tuple[nn.Module, list[Any]]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], Built]
    mode: str = "eval"
    backward: bool = False
    module: str | None = None
    cause: str | None = None
    samples: tuple[int, ...] | None = None
    phase: str | None = "forward"
    batch_index: int = 0  # which batch of ``batches`` goes non-finite (the others are clean)
    seed: int = 0  # torch.manual_seed before running (dropout draws)
    loss: bool = False  # the failure is in a loss
    why: str = ""

    @property
    def clean(self) -> bool:
        return self.cause is None


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _init(seed: int) -> None:
    torch.manual_seed(seed)


def _fill(linear: nn.Linear, weight: float | torch.Tensor, bias: float | None = 0.0) -> nn.Linear:
    with torch.no_grad():
        if isinstance(weight, torch.Tensor):
            linear.weight.copy_(weight)
        else:
            linear.weight.fill_(weight)
        if linear.bias is not None and bias is not None:
            linear.bias.fill_(bias)
    return linear


class Healthy(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.act = nn.ReLU()
        self.out = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.lin(x)))


def _zero_rows(shape: tuple[int, ...], rows: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    x = torch.randn(*shape, generator=_gen(seed))
    x[list(rows)] = 0.0
    return x


def _tokens(size: int, length: int, padded: dict[int, int], seed: int = 0) -> torch.Tensor:
    """Token ids 1..9 with ``padded[row]`` trailing padding positions (0) in the given rows."""
    tokens = torch.randint(1, 10, (size, length), generator=_gen(seed))
    for row, n in padded.items():
        tokens[row, length - n:] = 0
    return tokens


# ================================================================================== forward: domain
def _log_of_zero() -> Built:
    _init(1)
    x = torch.rand(8, 4, generator=_gen(1)) + 0.1
    x[2, 1] = 0.0
    x[5, 0] = 0.0
    return M.Pipeline(M.Fn(M.log_feature), head=nn.Linear(4, 2), op_name="feat"), [x]


def _sqrt_of_negative() -> Built:
    _init(2)
    b = torch.rand(6, 1, generator=_gen(2))
    x = torch.cat([b + torch.rand(6, 1, generator=_gen(3)), b], dim=1)  # x0 >= x1 ...
    x[[1, 4]] = x[[1, 4]].flip(1)  # ... except rows 1 and 4
    return M.Pipeline(M.Fn(M.sqrt_gap), head=nn.Linear(1, 1), op_name="gap"), [x]


def _layernorm_eps0() -> Built:
    _init(3)
    return M.PaddedNorm(nn.LayerNorm(8, eps=0.0)), [_tokens(6, 5, {1: 2, 4: 1}, seed=3)]


def _rmsnorm_eps0() -> Built:
    _init(4)
    return M.PaddedNorm(nn.RMSNorm(8, eps=0.0)), [_tokens(5, 6, {0: 3, 3: 1}, seed=4)]


def _masked_mean() -> Built:
    _init(5)
    tokens = _tokens(5, 6, {1: 2}, seed=5)
    tokens[3] = 0
    return M.Pooler(), [tokens]


def _pow_negative() -> Built:
    _init(6)
    x = torch.rand(6, 3, generator=_gen(6))
    x[0, 2] = -0.5
    x[4, 0] = -1.5
    return M.Pipeline(M.Fn(M.power_15), head=nn.Linear(3, 1), op_name="gamma"), [x]


def _negative_running_var() -> Built:
    _init(7)
    model = M.Pipeline(nn.BatchNorm1d(4), pre=nn.Linear(4, 4), head=nn.Linear(4, 2), op_name="bn")
    with torch.no_grad():
        model.bn.running_var[2] = -0.5
    return model, [torch.randn(5, 4, generator=_gen(7))]


# ================================================================================= forward: overflow
def _layernorm_overflow() -> Built:
    _init(8)
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    return model, [torch.randn(4, 8, generator=_gen(8)) * 1e21]


def _exp_overflow() -> Built:
    x = torch.randn(6, 4, generator=_gen(9))
    x[[0, 3]] = 100.0
    _init(9)
    return M.Pipeline(M.Fn(M.naive_softmax), head=nn.Linear(4, 1), op_name="softmax"), [x]


def _fp16_linear() -> Built:
    _init(10)
    model = M.Pipeline(_fill(nn.Linear(16, 8), 1.0), head=nn.Linear(8, 1), op_name="proj").half()
    x = torch.randn(6, 16, generator=_gen(10))
    x[2] = 5000.0
    return model, [x.half()]


def _fp16_autocast() -> Built:
    _init(11)
    inner = M.Pipeline(_fill(nn.Linear(8, 8), 1.0), head=nn.Linear(8, 1), op_name="proj")
    x = torch.randn(6, 8, generator=_gen(11))
    x[[1, 5]] = 9000.0
    return M.Autocast(inner, torch.float16), [x]


def _fp16_scores() -> Built:
    _init(12)
    x = torch.randn(4, 5, 16, generator=_gen(12))
    x[3] = 80.0 * torch.sign(x[3])
    return M.HalfScores(16).half(), [x.half()]


# ======================================================================== parameters, inputs, masks
def _nan_weight(autocast: bool) -> Callable[[], Built]:
    def build() -> Built:
        _init(13)
        model = Healthy()
        with torch.no_grad():
            model.out.weight[0, 1] = float("nan")
        wrapped = M.Autocast(model, torch.bfloat16) if autocast else model
        return wrapped, [torch.randn(5, 4, generator=_gen(13))]

    return build


def _nan_input() -> Built:
    _init(14)
    x = torch.randn(6, 4, generator=_gen(14))
    x[3, 2] = float("nan")
    return Healthy(), [torch.randn(3, 4, generator=_gen(15)), x]


def _inf_input_dict() -> Built:
    _init(16)
    scale = torch.ones(5, 1)
    scale[1, 0] = float("inf")
    return M.TwoInputs(), [{"x": torch.randn(5, 4, generator=_gen(16)), "scale": scale}]


def _masked_batch(size: int, length: int, bad: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(1, 10, (size, length), generator=_gen(seed))
    padding = torch.zeros(size, length, dtype=torch.bool)
    padding[:, -1] = True
    for b in bad:
        tokens[b] = 0
        padding[b] = True
    return tokens, padding


def _fully_masked_mha() -> Built:
    _init(17)
    return M.MHAModel(), [_masked_batch(4, 6, (2,), seed=17)]


def _hand_attention() -> Built:
    _init(18)
    padding = torch.zeros(4, 5, dtype=torch.bool)
    padding[1] = True
    padding[3, 3:] = True
    return M.AttentionBlock(), [(torch.randn(4, 5, 8, generator=_gen(18)), padding)]


def _encoder() -> Built:
    _init(19)
    padding = torch.tensor([[False] * 4, [True] * 4, [False, False, True, True]])
    return M.Encoder(), [(torch.randn(3, 4, 8, generator=_gen(19)), padding)]


def _batch_of_one() -> Built:
    _init(20)
    model = M.Pipeline(M.BatchStandardize(), pre=nn.Linear(4, 4), head=nn.Linear(4, 2), op_name="standardize")
    return model, [torch.randn(4, 4, generator=_gen(20)), torch.randn(1, 4, generator=_gen(21))]


def _dropout_ratio() -> Built:
    _init(22)
    return M.DropoutRatio(2, 0.5), [torch.randn(16, 2, generator=_gen(22))]


# =========================================================================================== losses
def _ce_all_ignored() -> Built:
    _init(23)
    return M.Classifier(nn.CrossEntropyLoss()), [(torch.randn(6, 4, generator=_gen(23)), torch.full((6,), -100))]


def _ctc(zero_infinity: bool) -> Callable[[], Built]:
    def build() -> Built:
        _init(24)
        feats = torch.randn(4, 6, 6, generator=_gen(24))
        targets = torch.tensor([[1, 2, 3, 0], [2, 3, 0, 0], [1, 2, 3, 4], [4, 3, 1, 0]])
        return M.CTCModel(zero_infinity), [(feats, targets, torch.tensor([6, 6, 3, 6]), torch.tensor([3, 2, 4, 3]))]

    return build


def _bce_empty() -> Built:
    _init(25)
    return M.MaskedBCE(), [(torch.randn(5, 4, generator=_gen(25)), torch.zeros(5, dtype=torch.bool),
                            torch.rand(5, generator=_gen(26)))]


def _nll_log_softmax() -> Built:
    _init(27)
    model = M.NLLClassifier()
    x = torch.randn(6, 4, generator=_gen(27))
    x[3] = 60.0 * torch.sign(model.lin.weight[0] - model.lin.weight[1]).detach()
    with torch.no_grad():
        logits = model.lin(x)
    target = logits.argmax(-1)
    target[3] = logits[3].argmin()  # a confidently wrong row: softmax underflows to 0 at its target
    return model, [(x, target)]


def _kl_masked() -> Built:
    _init(28)
    allowed = torch.ones(5, 5, dtype=torch.bool)
    allowed[1, 4] = False
    allowed[2, [0, 3]] = False
    teacher = torch.randn(5, 5, generator=_gen(28)).masked_fill(~allowed, float("-inf")).softmax(-1)
    return M.Distiller(), [(torch.randn(5, 4, generator=_gen(29)), allowed, teacher)]


def _gaussian_zero_var() -> Built:
    _init(30)
    return M.GaussianHead(), [(_zero_rows((6, 4), (2, 5), seed=30), torch.randn(6, 1, generator=_gen(31)))]


def _poisson_negative() -> Built:
    _init(32)
    x = torch.rand(7, 1, generator=_gen(32)) + 0.1
    x[[2, 6]] = -0.5
    return M.PoissonHead(), [(x, torch.ones(7, 1))]


def _inline_loss() -> Built:
    _init(33)
    return M.InlineLoss(), [(torch.randn(4, 4, generator=_gen(33)), torch.full((4,), -100))]


def _ce_target_masked() -> Built:
    _init(34)
    target = torch.tensor([0, 1, 2, 3, 4, 0])
    allowed = torch.ones(6, 5, dtype=torch.bool)
    allowed[1, 0] = False  # a masked class that is not the target: fine
    allowed[4, 4] = False  # the target itself is masked
    return M.MaskedClassifier(nn.CrossEntropyLoss(reduction="none")), [
        (torch.randn(6, 4, generator=_gen(34)), allowed, target)]


def _scored(criterion: nn.Module, rows: dict[int, float], target: torch.Tensor | None, seed: int) -> Built:
    """A Linear(4, 1) scorer with weight 1 and bias 0 (score = sum of x); x rows set so their score is rows[r]."""
    _init(seed)
    model = M.Scorer(criterion)
    _fill(model.lin, 1.0)
    x = torch.randn(6, 4, generator=_gen(seed)) * 0.5
    for r, score in rows.items():
        x[r] = score / 4
    return model, [(x,) if target is None else (x, target)]


def _log_sigmoid_loss() -> Built:
    return _scored(M.LogSigmoidLoss(), {0: -120.0, 3: -100.0}, None, seed=35)


def _soft_margin() -> Built:
    return _scored(nn.SoftMarginLoss(reduction="none"), {5: -100.0}, torch.ones(6), seed=36)


# ============================================================================= backward-only failures
def _backward_pipeline(fn: Callable[..., torch.Tensor], name: str, dim_in: int, dim_out: int,
                       zero: tuple[int, ...], seed: int, size: int = 5) -> Built:
    """Linear (no bias) -> fn, fed rows that are zero in ``zero``: the Linear's output is exactly 0 there."""
    _init(seed)
    model = M.Pipeline(M.Fn(fn), pre=nn.Linear(dim_in, dim_out, bias=False), op_name=name)
    return model, [_zero_rows((size, dim_in), zero, seed=seed)]


def _identity_pipeline(fn: Callable[..., torch.Tensor], name: str, x: torch.Tensor) -> Built:
    dim = x.shape[1]
    model = M.Pipeline(M.Fn(fn), pre=_fill(nn.Linear(dim, dim, bias=False), torch.eye(dim)), op_name=name)
    return model, [x]


def _acos_saturated() -> Built:
    _init(40)
    x = torch.randn(6, 2, generator=_gen(40)) * 0.5
    x[[1, 4], 0] = 20.0  # tanh(20) == 1.0 exactly in float32
    return _identity_pipeline(M.saturated_angle, "angle", x)


def _asin_latitude() -> Built:
    _init(41)
    x = torch.randn(6, 3, generator=_gen(41))
    x[[0, 5]] = torch.tensor([0.0, 0.0, 2.0])  # on the pole: z / r == 1 exactly
    return _identity_pipeline(M.latitude, "latitude", x)


def _where_log() -> Built:
    _init(42)
    x = torch.rand(5, 3, generator=_gen(42)) + 0.1
    x[3, 1] = 0.0
    return _identity_pipeline(M.masked_log, "logfeat", x)


def _siamese() -> Built:
    _init(43)
    x1 = torch.randn(5, 4, generator=_gen(43))
    x2 = torch.randn(5, 4, generator=_gen(44))
    x2[2] = x1[2]  # a pair of identical inputs: distance 0
    return M.Siamese(), [(x1, x2)]


def _triplet_sqrt() -> Built:
    _init(45)
    anchor = torch.randn(5, 3, generator=_gen(45))
    positive = anchor + 0.1 * torch.randn(5, 3, generator=_gen(46))
    positive[1] = anchor[1]
    negative = torch.randn(5, 3, generator=_gen(47))
    criterion = nn.TripletMarginWithDistanceLoss(distance_function=lambda a, b: ((a - b) ** 2).sum(-1).sqrt(),
                                                 reduction="none")
    return M.TripletModel(criterion), [(anchor, positive, negative)]


def _bce_fp16() -> Built:
    _init(48)
    model = M.SigmoidBCE()
    _fill(model.lin, 1.0)
    x = torch.randn(6, 4, generator=_gen(48)) * 0.5
    x[[2, 4]] = -10.0  # logit -40: sigmoid is exactly 0 in float16
    return model.half(), [(x.half(), torch.ones(6, dtype=torch.float16))]


# =========================================================================================== clean
def _causal_mask() -> Built:
    _init(50)
    return M.CausalMask(), [torch.randn(3, 5, 4, generator=_gen(50))]


def _relu_sqrt() -> Built:
    return _backward_pipeline(lambda h: torch.sqrt(torch.relu(h)).sum(-1), "root", 3, 3, (1, 3), seed=51)


def _sdpa() -> Built:
    _init(52)
    padding = torch.zeros(4, 5, dtype=torch.bool)
    padding[2] = True
    return M.SDPAModel(), [(torch.randn(4, 5, 8, generator=_gen(52)), padding)]


def _big_finite() -> Built:
    _init(53)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), [torch.randn(4, 8, generator=_gen(53)) * 1e15]


def _cdist_zero() -> Built:
    _init(54)
    x1 = torch.randn(5, 4, generator=_gen(54))
    x2 = torch.randn(5, 4, generator=_gen(55))
    x2[2] = x1[2]

    class Pairs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Linear(4, 4, bias=False)
            self.distance = M.Fn(lambda a, b: torch.cdist(a[:, None], b[:, None]).flatten(), "cdist")

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.distance(self.enc(a), self.enc(b))

    return Pairs(), [(x1, x2)]


def _bce_saturated_fp32() -> Built:
    _init(56)
    model = M.SigmoidBCE()
    _fill(model.lin, 1.0)
    x = torch.randn(6, 4, generator=_gen(56)) * 0.5
    x[[2, 4]] = -50.0  # sigmoid(-200) == 0: BCE floors the log at -100
    return model, [(x, torch.ones(6))]


def _safe_log() -> Built:
    _init(57)
    x = torch.rand(5, 3, generator=_gen(57)) + 0.1
    x[3, 1] = 0.0
    fn = lambda h: torch.log(torch.where(h > 0, h, torch.ones_like(h))).sum(-1)  # noqa: E731
    return _identity_pipeline(fn, "logfeat", x)


def _mha_train() -> Built:
    _init(58)
    return M.MHAModel(), [_masked_batch(4, 6, (2,), seed=58)]


def _b(name: str, build: Callable[[], Built], module: str, samples: tuple[int, ...], why: str,
       cause: str = "numerical_domain", loss: bool = False) -> Case:
    return Case(name, build, mode="train", backward=True, module=module, cause=cause, samples=samples,
                phase="backward", loss=loss, why=why)


CASES: list[Case] = [
    # ---------------------------------------------------------------------------- forward, domain
    Case("log_of_zero_feature", _log_of_zero, module="feat", cause="numerical_domain", samples=(2, 5),
         why="log of a feature that is exactly 0 for two samples"),
    Case("sqrt_of_negative_gap", _sqrt_of_negative, module="gap", cause="numerical_domain", samples=(1, 4),
         why="sqrt of a difference that is negative for two samples"),
    Case("layernorm_eps0_padding", _layernorm_eps0, module="norm", cause="numerical_domain", samples=(1, 4),
         why="LayerNorm(eps=0) on zero embeddings of padding positions (constant rows)"),
    Case("rmsnorm_eps0_padding", _rmsnorm_eps0, module="norm", cause="numerical_domain", samples=(0, 3),
         why="RMSNorm(eps=0) on zero embeddings of padding positions"),
    Case("masked_mean_all_padding", _masked_mean, module="pool", cause="numerical_domain", samples=(3,),
         why="a masked mean over a sequence that is all padding: 0/0"),
    Case("pow_negative_base", _pow_negative, module="gamma", cause="numerical_domain", samples=(0, 4),
         why="x ** 1.5 of negative features"),
    Case("batchnorm_negative_running_var", _negative_running_var, module="bn", cause="numerical_domain",
         why="eval-mode BatchNorm with a corrupt (negative) running_var"),
    # -------------------------------------------------------------------------- forward, overflow
    Case("layernorm_overflow_1e21", _layernorm_overflow, module="1", cause="dtype_overflow",
         why="Sequential(Linear, LayerNorm, Linear) fed 1e21: the LayerNorm variance overflows float32"),
    Case("exp_overflow_naive_softmax", _exp_overflow, module="softmax", cause="dtype_overflow", samples=(0, 3),
         why="exp without subtracting the max, for logits of 100"),
    Case("fp16_linear_overflow", _fp16_linear, module="proj", cause="dtype_overflow", samples=(2,),
         why="a float16 Linear whose output exceeds 65504 for one sample"),
    Case("fp16_autocast_linear_overflow", _fp16_autocast, module="inner.proj", cause="dtype_overflow",
         samples=(1, 5), why="a Linear under CPU float16 autocast: finite in float32, inf in float16"),
    Case("fp16_attention_scores_overflow", _fp16_scores, module="attn", cause="dtype_overflow", samples=(3,),
         why="unscaled float16 attention scores q @ k.T above 65504"),
    # ---------------------------------------------------------------- parameters, inputs, masking
    Case("nan_weight", _nan_weight(False), module="out", cause="nonfinite_parameter",
         why="a NaN in a Linear's weight"),
    Case("nan_weight_bf16_autocast", _nan_weight(True), module="inner.out", cause="nonfinite_parameter",
         why="a NaN in a Linear's weight, run under bfloat16 autocast"),
    Case("nan_in_batch", _nan_input, module="<input>", cause="nonfinite_input", samples=(3,), batch_index=1,
         why="the second batch carries a NaN in sample 3"),
    Case("inf_in_dict_batch", _inf_input_dict, module="<input>", cause="nonfinite_input", samples=(1,),
         why="a dict batch with inf in one field of sample 1"),
    Case("fully_masked_mha", _fully_masked_mha, module="attn", cause="fully_masked_attention", samples=(2,),
         why="nn.MultiheadAttention fast path with every key of sample 2 masked"),
    Case("fully_masked_hand_attention", _hand_attention, module="attn", cause="fully_masked_attention",
         samples=(1,), why="masked_fill(-inf) + softmax over a sample that is all padding"),
    Case("transformer_encoder_all_padding", _encoder, module="encoder.layers.0", cause="fully_masked_attention",
         samples=(1,), why="TransformerEncoder fast path on an all-padding sample"),
    Case("std_batch_of_one", _batch_of_one, mode="train", module="standardize", cause="batch_size_dependent",
         samples=(0,), batch_index=1, why="unbiased std over the batch of a batch of one"),
    Case("dropout_zeroes_a_count", _dropout_ratio, mode="train", module="ratio", cause="dropout_dependent",
         seed=3, why="a division by the number of entries dropout kept"),
    # -------------------------------------------------------------------------------- loss, forward
    Case("cross_entropy_all_ignored", _ce_all_ignored, mode="train", module="criterion", cause="numerical_domain",
         loss=True, why="CrossEntropyLoss(reduction='mean') with every target ignore_index"),
    Case("ctc_impossible_alignment", _ctc(False), mode="train", module="ctc", cause="numerical_domain",
         samples=(2,), loss=True, why="CTCLoss without zero_infinity, a target longer than its input"),
    Case("bce_empty_selection", _bce_empty, mode="train", module="criterion", cause="numerical_domain", loss=True,
         why="BCELoss(p[mask], y[mask]) with an all-False mask: a mean over nothing"),
    Case("nll_on_log_of_softmax", _nll_log_softmax, mode="train", module="probs", cause="numerical_domain",
         samples=(3,), loss=True, why="NLLLoss on log(softmax(x)), which underflows to log(0) for a wrong row"),
    Case("kldiv_masked_student", _kl_masked, mode="train", module="criterion", cause="numerical_domain",
         samples=(1, 2), loss=True, why="KLDivLoss(log_target=False) with -inf log-probabilities where the "
         "teacher is 0: 0 * -inf"),
    Case("gaussian_nll_zero_variance", _gaussian_zero_var, mode="train", module="criterion",
         cause="numerical_domain", samples=(2, 5), loss=True, why="GaussianNLLLoss(eps=0) with a variance of 0"),
    Case("poisson_negative_rate", _poisson_negative, mode="train", module="criterion", cause="numerical_domain",
         samples=(2, 6), loss=True, why="PoissonNLLLoss(log_input=False) fed a raw Linear output as the rate"),
    Case("loss_built_in_forward", _inline_loss, mode="train", module="<CrossEntropyLoss>",
         cause="numerical_domain", loss=True, why="a CrossEntropyLoss created inside forward, every target ignored"),
    Case("cross_entropy_target_masked", _ce_target_masked, mode="train", module="criterion",
         cause="numerical_domain", samples=(4,), loss=True, why="the target class's logit is masked to -inf"),
    Case("handwritten_log_sigmoid_loss", _log_sigmoid_loss, mode="train", module="criterion",
         cause="numerical_domain", samples=(0, 3), loss=True, why="-log(sigmoid(z)) for z below -88"),
    Case("soft_margin_overflow", _soft_margin, mode="train", module="criterion", cause="dtype_overflow",
         samples=(5,), loss=True, why="SoftMarginLoss computes exp(-y * x) directly: overflows at 100"),
    # ------------------------------------------------------------------------------- backward only
    _b("sqrt_norm_zero_vector", lambda: _backward_pipeline(M.sqrt_norm, "norm", 3, 3, (2,), seed=37), "norm",
       (2,), "torch.sqrt((h * h).sum(-1)) of a zero vector: sqrt'(0) is infinite"),
    _b("pow_half_at_zero", lambda: _backward_pipeline(M.magnitude, "magnitude", 3, 3, (1, 4), seed=38),
       "magnitude", (1, 4), "(h * h) ** 0.5 at 0"),
    _b("acos_of_saturated_tanh", _acos_saturated, "angle", (1, 4), "acos(tanh(h)) where tanh is exactly 1"),
    _b("asin_on_the_pole", _asin_latitude, "latitude", (0, 5), "asin(z / r) == asin(1) for points on the axis"),
    _b("where_masks_log_of_zero", _where_log, "logfeat", (3,),
       "torch.where(h > 0, log(h), 0): the masked branch's gradient is NaN"),
    _b("xlogy_entropy_at_zero", lambda: _backward_pipeline(M.squared_entropy, "entropy", 3, 3, (2,), seed=39),
       "entropy", (2,), "xlogy(p, p) with p == 0: the gradient in y is 0/0"),
    _b("handwritten_layernorm_eps_outside_sqrt",
       lambda: _backward_pipeline(M.hand_layer_norm, "norm", 4, 4, (0, 3), seed=59), "norm", (0, 3),
       "(h - mu) / (sqrt(var) + eps) on constant rows: sqrt'(0)"),
    _b("eigh_repeated_eigenvalues", lambda: _backward_pipeline(M.eigvecs, "spectral", 4, 9, (1,), seed=60),
       "spectral", (1,), "eigenvectors of a zero matrix (all eigenvalues equal)"),
    _b("svd_repeated_singular_values", lambda: _backward_pipeline(M.left_singular, "svd", 4, 9, (2,), seed=61),
       "svd", (2,), "U of the SVD of a zero matrix"),
    _b("qr_rank_deficient", lambda: _backward_pipeline(M.orthonormal, "orth", 4, 9, (3,), seed=62), "orth", (3,),
       "QR of a zero matrix"),
    _b("siamese_sqrt_distance", _siamese, "distance", (2,), "a sqrt distance between identical inputs"),
    _b("triplet_sqrt_distance", _triplet_sqrt, "criterion", (1,),
       "TripletMarginWithDistanceLoss with a sqrt distance at zero distance", loss=True),
    _b("bce_fp16_saturated_sigmoid", _bce_fp16, "criterion", (2, 4),
       "sigmoid + BCELoss in float16: p == 0 exactly, the gradient 1e12 overflows", cause="dtype_overflow",
       loss=True),
]

CLEAN: list[Case] = [
    Case("causal_mask_latent_inf", _causal_mask, phase=None, why="-inf above the diagonal never reaches the output"),
    Case("relu_before_sqrt", _relu_sqrt, mode="train", backward=True, phase=None,
         why="sqrt(relu(h)): ReLU's backward masks sqrt's infinite gradient"),
    Case("sdpa_fully_masked_sample", _sdpa, phase=None,
         why="F.scaled_dot_product_attention returns 0 for a fully masked sample"),
    Case("big_but_finite_activation", _big_finite, phase=None, why="activations of 1e15 stay finite in float32"),
    Case("cumprod_with_zeros", lambda: _backward_pipeline(lambda h: h.cumprod(-1).sum(-1), "cumprod", 4, 4, (1,),
                                                          seed=63), mode="train", backward=True, phase=None,
         why="cumprod's gradient with zeros is finite in torch 2.13"),
    Case("cdist_zero_distance", _cdist_zero, mode="train", backward=True, phase=None,
         why="torch.cdist's gradient at zero distance is 0 in torch 2.13"),
    Case("atan2_at_origin", lambda: _backward_pipeline(lambda h: torch.atan2(h[:, 0], h[:, 1]), "angle", 2, 2,
                                                       (0, 2), seed=64), mode="train", backward=True, phase=None,
         why="atan2's gradient at (0, 0) is 0 in torch 2.13"),
    Case("vector_norm_zero_vector", lambda: _backward_pipeline(lambda h: torch.linalg.vector_norm(h, dim=-1), "norm",
                                                               3, 3, (2,), seed=65), mode="train", backward=True,
         phase=None, why="linalg.vector_norm's gradient at 0 is 0"),
    Case("bce_saturated_float32", _bce_saturated_fp32, mode="train", backward=True, phase=None,
         why="BCELoss floors log at -100: a saturated sigmoid stays finite in float32"),
    Case("ctc_zero_infinity", _ctc(True), mode="train", backward=True, phase=None,
         why="CTCLoss(zero_infinity=True) zeroes an impossible alignment"),
    Case("log_of_safe_where", _safe_log, mode="train", backward=True, phase=None,
         why="log(torch.where(h > 0, h, 1)): the input is made safe before the op"),
    Case("mha_train_fully_masked", _mha_train, mode="train", phase=None,
         why="MultiheadAttention off the fast path (grad enabled) gives 0 for a fully masked sample"),
]
