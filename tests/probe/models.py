"""Tiny models that misbehave on purpose, for the probe tests."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import nn


class Log(nn.Module):
    """log(x): -inf at 0, NaN below."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


class Sqrt(nn.Module):
    """sqrt(x): finite at 0 forward, infinite gradient at 0 backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x)


class ZeroRow(nn.Module):
    """Zeroes row ``row`` of the batch (so that a following log makes it -inf)."""

    def __init__(self, row: int) -> None:
        super().__init__()
        self.row = row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.abs() + 0.5
        mask = torch.ones_like(x)
        mask[self.row] = 0.0
        return x * mask


def log_chain(row: int = 2, d: int = 4) -> nn.Sequential:
    """ZeroRow -> Log (the producer) -> Linear -> Tanh -> Linear (three that propagate)."""
    torch.manual_seed(0)
    return nn.Sequential(ZeroRow(row), Log(), nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 2))


class MaskedScores(nn.Module):
    """Fills masked scores with -inf on purpose (a latent producer)."""

    def forward(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return scores.masked_fill(mask, float("-inf"))


class MaskedAttention(nn.Module):
    """scores -> masked_fill(-inf) in a child -> softmax in a child -> weighted sum."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.mask = MaskedScores()
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(-1, -2)  # (B, L, L)
        weights = self.softmax(self.mask(scores, mask))
        return weights @ x


class InlineSoftmaxAttention(nn.Module):
    """A mask producer child, then a softmax written inline: NaN for a fully masked row."""

    def __init__(self) -> None:
        super().__init__()
        self.mask = MaskedScores()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = x @ x.transpose(-1, -2)
        return torch.softmax(self.mask(scores, mask), dim=-1) @ x


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        h = self.lin(x)
        return {"logits": h, "aux": (h.sum(), None), "name": "dict"}


class Pair(NamedTuple):
    left: torch.Tensor
    right: torch.Tensor


@dataclasses.dataclass
class Output:
    hidden: torch.Tensor
    pair: Pair
    note: str = "x"


class StructOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Output]:
        h = self.lin(x)
        return h, Output(hidden=h * 2, pair=Pair(h, -h))


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def mlp(d: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.LayerNorm(8), nn.Dropout(0.1), nn.Linear(8, 2))


class SASRecBlock(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, key_padding_mask=pad, attn_mask=causal, need_weights=False)
        x = x + self.drop(a)
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(nn.Module):
    """A SASRec-sized sequential recommender (item + position embeddings, causal self-attention blocks)."""

    def __init__(self, items: int = 1000, d: int = 64, length: int = 50, blocks: int = 2, heads: int = 2,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.item = nn.Embedding(items + 1, d, padding_idx=0)
        self.pos = nn.Embedding(length, d)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(d, heads, dropout) for _ in range(blocks))
        self.ln = nn.LayerNorm(d)
        self.register_buffer("causal", torch.ones(length, length, dtype=torch.bool).triu(1), persistent=False)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        pad = seq == 0  # (B, L)
        pos = torch.arange(seq.shape[1], device=seq.device)
        x = self.drop(self.item(seq) + self.pos(pos))
        for block in self.blocks:
            x = block(x, pad, self.causal)
        return self.ln(x)  # (B, L, D)
