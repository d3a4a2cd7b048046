"""Small models for the zoo: each breaks (or, for the clean ones, looks like it might but does not) in one
known way. The failing computation sits in a named submodule so that a diagnosis can name it."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Fn(nn.Module):
    """A named place for one computation: ``Fn(torch.log)`` is a submodule whose forward is ``torch.log``."""

    def __init__(self, fn: Callable[..., torch.Tensor], name: str = "") -> None:
        super().__init__()
        self.fn = fn
        self.label = name or getattr(fn, "__name__", "fn")

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(*args)

    def extra_repr(self) -> str:
        return self.label


class Pipeline(nn.Module):
    """``pre`` (optional) -> ``op`` -> ``head`` (optional): the op is the module a diagnosis should name."""

    def __init__(self, op: nn.Module, pre: nn.Module | None = None, head: nn.Module | None = None,
                 op_name: str = "op") -> None:
        super().__init__()
        self.pre = pre
        self.add_module(op_name, op)
        self.op_name = op_name
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x) if self.pre is not None else x
        h = getattr(self, self.op_name)(h)
        return self.head(h) if self.head is not None else h


# ---------------------------------------------------------------------------------------- forward failures
def log_feature(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x)


def sqrt_gap(x: torch.Tensor) -> torch.Tensor:
    """sqrt of a difference the model assumes is non-negative."""
    return torch.sqrt(x[:, :1] - x[:, 1:2])


def naive_softmax(x: torch.Tensor) -> torch.Tensor:
    """exp(x) / sum(exp(x)) without subtracting the max: overflows for large logits."""
    e = torch.exp(x)
    return e / e.sum(-1, keepdim=True)


def power_15(x: torch.Tensor) -> torch.Tensor:
    return x ** 1.5


class PaddedNorm(nn.Module):
    """Embedding (padding rows are zero vectors) -> a norm -> a head."""

    def __init__(self, norm: nn.Module, dim: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, dim, padding_idx=0)
        self.norm = norm
        self.head = nn.Linear(dim, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.emb(tokens)))


class MaskedMeanPool(nn.Module):
    def forward(self, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return (h * keep).sum(1) / keep.sum(1)  # (B, D): 0/0 for an all-padding sequence


class Pooler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4, padding_idx=0)
        self.pool = MaskedMeanPool()
        self.head = nn.Linear(4, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keep = (tokens != 0).float().unsqueeze(-1)  # (B, L, 1)
        return self.head(self.pool(self.emb(tokens), keep))


class Autocast(nn.Module):
    """Runs ``inner`` under CPU autocast, as a training script would."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=self.dtype):
            return self.inner(x).float()


class HandAttention(nn.Module):
    """Unscaled dot-product self-attention without projections; ``masked`` fills padded keys with -inf."""

    def __init__(self, masked: bool) -> None:
        super().__init__()
        self.masked = masked

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        scores = x @ x.transpose(-1, -2)  # (B, L, L)
        if self.masked and padding is not None:
            scores = scores.masked_fill(padding[:, None, :], float("-inf"))
        return scores.softmax(-1) @ x


class AttentionBlock(nn.Module):
    def __init__(self, dim: int = 8, masked: bool = True) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.attn = HandAttention(masked)
        self.out = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn(self.proj(x), padding))


class HalfScores(nn.Module):
    """float16 attention scores of un-normalised activations: q @ k.T exceeds 65504."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.attn = HandAttention(masked=False)
        self.out = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn(x))


class MHAModel(nn.Module):
    def __init__(self, dim: int = 8, need_weights: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, dim, padding_idx=0)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.out = nn.Linear(dim, 2)
        self.need_weights = need_weights

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens)
        h, _ = self.attn(x, x, x, key_padding_mask=padding, need_weights=self.need_weights)
        return self.out(h)


class Encoder(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, 2, 16, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x, src_key_padding_mask=padding))


class SDPAModel(nn.Module):
    """F.scaled_dot_product_attention with a boolean mask: a fully masked sample comes out as 0, not NaN."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, -1)
        keep = ~padding[:, None, :]  # (B, 1, L): True where a key may be attended
        return self.out(F.scaled_dot_product_attention(q, k, v, attn_mask=keep))


class BatchStandardize(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h - h.mean(0)) / (h.std(0) + 1e-5)  # unbiased std over the batch


class DropoutRatio(nn.Module):
    """Divides by the fraction of entries that survived dropout: 0/0 when dropout zeroes a whole row."""

    def __init__(self, dim: int = 2, p: float = 0.5) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.drop = nn.Dropout(p)
        self.ratio = Fn(lambda h: h.sum(-1, keepdim=True) / (h != 0).float().sum(-1, keepdim=True), "ratio")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ratio(self.drop(self.lin(x).abs() + 1))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * scale


# --------------------------------------------------------------------------------------- backward failures
def sqrt_norm(h: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((h * h).sum(-1))


def magnitude(h: torch.Tensor) -> torch.Tensor:
    return (h * h).pow(0.5)


def saturated_angle(h: torch.Tensor) -> torch.Tensor:
    return torch.acos(torch.tanh(h))


def latitude(h: torch.Tensor) -> torch.Tensor:
    r = h.norm(dim=-1)
    return torch.asin(h[:, 2] / r)


def masked_log(h: torch.Tensor) -> torch.Tensor:
    return torch.where(h > 0, torch.log(h), torch.zeros_like(h)).sum(-1)


def squared_entropy(h: torch.Tensor) -> torch.Tensor:
    p = h * h
    return -torch.xlogy(p, p).sum(-1)


def hand_layer_norm(h: torch.Tensor) -> torch.Tensor:
    """eps outside the sqrt: finite at a constant row, but sqrt'(0) is infinite."""
    mu = h.mean(-1, keepdim=True)
    sd = ((h - mu) ** 2).mean(-1, keepdim=True).sqrt()
    return (h - mu) / (sd + 1e-5)


def eigvecs(h: torch.Tensor) -> torch.Tensor:
    a = h.reshape(-1, 3, 3)
    _, vectors = torch.linalg.eigh(a + a.transpose(-1, -2))
    return vectors[..., -1].abs().sum(-1)


def left_singular(h: torch.Tensor) -> torch.Tensor:
    u, _, _ = torch.linalg.svd(h.reshape(-1, 3, 3))
    return u[..., 0].abs().sum(-1)


def orthonormal(h: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(h.reshape(-1, 3, 3))
    return q.sum((-2, -1))


class Siamese(nn.Module):
    """Two inputs through one encoder, then a Euclidean distance written with sqrt."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 4, bias=False)
        self.distance = Fn(lambda a, b: ((a - b) ** 2).sum(-1).sqrt(), "distance")

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.distance(self.enc(x1), self.enc(x2))


# -------------------------------------------------------------------------------------------- losses
class Classifier(nn.Module):
    """Linear logits and a registered criterion: ``model(x, target)`` returns the loss."""

    def __init__(self, criterion: nn.Module, dim: int = 4, classes: int = 5) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, classes)
        self.criterion = criterion

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.lin(x), target)


class MaskedClassifier(nn.Module):
    """Classes outside each sample's allowed set are masked with -inf before the loss."""

    def __init__(self, criterion: nn.Module) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 5)
        self.criterion = criterion

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = self.lin(x).masked_fill(~allowed, float("-inf"))
        return self.criterion(logits, target)


class Distiller(nn.Module):
    """KL(teacher || student) with the student's vocabulary masked by -inf: 0 * -inf where both are 0."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 5)
        self.criterion = nn.KLDivLoss(reduction="batchmean")

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student = self.lin(x).masked_fill(~allowed, float("-inf")).log_softmax(-1)
        return self.criterion(student, teacher)


class InlineLoss(nn.Module):
    """The criterion is built inside forward, so it is not a registered submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.CrossEntropyLoss()(self.lin(x), target)


class LogOfSoftmax(nn.Module):
    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.softmax(logits, -1))  # underflows to log(0) for confident wrong rows


class NLLClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.probs = LogOfSoftmax()
        self.criterion = nn.NLLLoss()

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.probs(self.lin(x)), target)


class CTCModel(nn.Module):
    def __init__(self, zero_infinity: bool = False) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 5)
        self.ctc = nn.CTCLoss(zero_infinity=zero_infinity)

    def forward(self, feats: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                target_lengths: torch.Tensor) -> torch.Tensor:
        log_probs = self.lin(feats).log_softmax(-1).transpose(0, 1)  # (T, B, C)
        return self.ctc(log_probs, targets, input_lengths, target_lengths)


class MaskedBCE(nn.Module):
    """BCE over the selected positions only: loss(p[mask], y[mask])."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.criterion = nn.BCELoss()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.lin(x)).squeeze(-1)
        return self.criterion(p[mask], y[mask])


class SigmoidBCE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.criterion = nn.BCELoss()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(torch.sigmoid(self.lin(x)).squeeze(-1), y)


class GaussianHead(nn.Module):
    """Predicts a mean and a variance = (linear output) ** 2, scored by GaussianNLLLoss(eps=0)."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = nn.Linear(4, 1)
        self.var = nn.Linear(4, 1, bias=False)
        self.criterion = nn.GaussianNLLLoss(eps=0.0, reduction="none")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.mean(x), y, self.var(x) ** 2)


class PoissonHead(nn.Module):
    """A raw linear output used as a Poisson rate (log_input=False): negative for some samples."""

    def __init__(self) -> None:
        super().__init__()
        self.rate = nn.Linear(1, 1)
        with torch.no_grad():
            self.rate.weight.fill_(1.0)
            self.rate.bias.zero_()
        self.criterion = nn.PoissonNLLLoss(log_input=False, reduction="none")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.rate(x), y)


class LogSigmoidLoss(nn.Module):
    """A hand-written -log(sigmoid(z)): log(0) = -inf once sigmoid underflows (z < -88 in float32)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return -torch.log(torch.sigmoid(z))


class Scorer(nn.Module):
    def __init__(self, criterion: nn.Module) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.criterion = criterion

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.lin(x).squeeze(-1), *rest)


class TripletModel(nn.Module):
    def __init__(self, criterion: nn.Module) -> None:
        super().__init__()
        self.enc = nn.Linear(3, 3, bias=False)
        self.criterion = criterion

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.enc(anchor), self.enc(positive), self.enc(negative))


# ---------------------------------------------------------------------------------------------- clean
class CausalMask(nn.Module):
    """Scores masked with -inf above the diagonal: every query keeps its own key, so the -inf is latent."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ x.transpose(-1, -2)
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        return scores.masked_fill(causal, float("-inf")).softmax(-1) @ x
