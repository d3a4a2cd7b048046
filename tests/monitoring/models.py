"""Tiny models that misbehave on purpose, importable by factory strings (``tests.monitoring.models:...``)."""

from __future__ import annotations

import torch
from torch import nn

FACTORY_LOGNET = "tests.monitoring.models:make_lognet"
FACTORY_ENCODER = "tests.monitoring.models:make_encoder"


class LogNet(nn.Module):
    """``head(log(relu(proj(x)) + eps))``: finite for positive inputs, -inf then NaN when a row is all <= 0
    (``proj`` is the identity), so the origin is the root's own ``log`` and the rows are known."""

    def __init__(self, dim: int = 4, eps: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        self.proj = nn.Linear(dim, dim)
        self.act = nn.ReLU()
        self.head = nn.Linear(dim, 1)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(dim))
            self.proj.bias.zero_()
            self.head.weight.fill_(1.0)
            self.head.bias.zero_()
            self.head.weight[0, 0] = 0.0  # 0 * -inf = NaN in the head: a NaN output for the bad rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.log(self.act(self.proj(x)) + self.eps))


def make_lognet(dim: int = 4, eps: float = 0.0) -> LogNet:
    return LogNet(dim=dim, eps=eps)


class Encoder(nn.Module):
    """Embedding + nn.TransformerEncoder with a key padding mask: an all-padding sample (ids all 0) gives NaN in
    eval under no_grad through the native fast path, and finite values with any per-module hook."""

    def __init__(self, vocab: int = 20, dim: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        layer = nn.TransformerEncoderLayer(dim, 2, dim_feedforward=32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.emb(ids), src_key_padding_mask=ids == 0)  # (B, L, D)
        return self.head(h[:, -1])  # (B, 1)


def make_encoder(vocab: int = 20, dim: int = 16, layers: int = 2) -> Encoder:
    torch.manual_seed(0)
    return Encoder(vocab=vocab, dim=dim, layers=layers)


class SqrtNet(nn.Module):
    """Finite forward, NaN gradient: ``sqrt`` of an exact 0 has an infinite derivative (times 0 -> NaN)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self.lin(x) * 0.0).sum(dim=1)


def good_batch(n: int = 3, dim: int = 4) -> torch.Tensor:
    return torch.rand(n, dim) + 0.5


def bad_batch(n: int = 3, dim: int = 4, rows: tuple[int, ...] = (1,)) -> torch.Tensor:
    x = good_batch(n, dim)
    for r in rows:
        x[r] = -1.0
    return x


FACTORY_SCORER = "tests.monitoring.models:make_scorer"


class Scorer(nn.Module):
    """Trained through a method (``train_logits``), evaluated through ``forward``, like ur4rec's model.
    ``train_logits`` divides by the norm of a row of ``proj(x)``: 0/0 = NaN for an all-zero input row."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)
        self.norm = Normalize()
        self.out = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.proj(x))

    def train_logits(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.out(self.norm(self.proj(x))) * scale + 0 * self(x)  # self(x): a nested forward call


class Normalize(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h / h.norm(dim=-1, keepdim=True)


def make_scorer(dim: int = 4) -> Scorer:
    torch.manual_seed(0)
    return Scorer(dim)
