"""Tiny models that misbehave on purpose, one per cause."""

from __future__ import annotations

import torch
from torch import nn


class Healthy(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.act = nn.ReLU()
        self.out = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.lin(x)))


class LogFeature(nn.Module):
    """log of a feature that is 0 for some samples."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)  # LOG-LINE


class LogModel(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.feat = LogFeature()
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.feat(x.abs())
        return self.head(self.lin(h))


class MaskedAttention(nn.Module):
    """Self-attention with key padding + causal mask: a sample whose keys are all padding has no key."""

    def __init__(self, dim: int = 8, heads: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, dim, padding_idx=0)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True, dropout=dropout)
        self.out = nn.Linear(dim, 3)

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens)
        h, _ = self.attn(x, x, x, key_padding_mask=padding, need_weights=False)
        return self.out(h)


class Encoder(nn.Module):
    """nn.TransformerEncoder without nested tensors: the layer fast path NaNs on an all-padding sample."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, 2, 16, batch_first=True, dropout=0.1)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x, src_key_padding_mask=padding))


class IntentionalMask(nn.Module):
    """Scores masked with -inf before a softmax that always keeps one key: latent only, clean."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ x.transpose(-1, -2)  # (B, L, L)
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        return scores.softmax(-1) @ x


class Overflow(nn.Module):
    """fp16 square of values ~300: 90000 > 65504."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return (h * h).sum(-1)


class DropoutRatio(nn.Module):
    """Divides by the fraction of entries that survived dropout: 0/0 when dropout zeroes a whole row."""

    def __init__(self, dim: int = 2, p: float = 0.5) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.lin(x).abs() + 1)
        kept = (h != 0).float().mean(-1, keepdim=True)
        return h.sum(-1, keepdim=True) * 0 / kept


class BatchStd(nn.Module):
    """Standardises with the batch's std (unbiased): NaN for a batch of one."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return (h - h.mean(0)) / (h.std(0) + 1e-5)


class SqrtNorm(nn.Module):
    """Euclidean norm via sqrt: the gradient at the zero vector is infinite."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return torch.sqrt((h * h).sum(-1)).sum()


class Deep(nn.Module):
    """A stack of Linear+ReLU blocks, for budget tests, plus the log of the input: -inf for rows with a 0."""

    def __init__(self, dim: int = 4, depth: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.ReLU()) for _ in range(depth))
        self.feat = LogFeature()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for block in self.blocks:
            h = block(h)
        return h + self.feat(x)


class Sasrec(nn.Module):
    def __init__(self, dim: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for _ in range(2):
            block = nn.Module()
            block.attn = nn.MultiheadAttention(dim, 2, dropout=dropout, batch_first=True)
            block.drop = nn.Dropout(dropout)
            block.norm = nn.LayerNorm(dim)
            self.blocks.append(block)


class Recommender(nn.Module):
    """The original bug's shape: a ``sasrec`` submodule whose dropout was hard-coded at 0.1."""

    def __init__(self) -> None:
        super().__init__()
        self.sasrec = Sasrec(8, dropout=0.1)
        self.text = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.text(x)


def fully_masked_batch(size: int = 4, length: int = 6, bad: tuple[int, ...] = (1,)) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 10, (size, length), generator=g)
    padding = torch.zeros(size, length, dtype=torch.bool)
    padding[:, :2] = True  # left padding
    for b in bad:
        padding[b] = True
        tokens[b] = 0
    return tokens, padding


class FlatLog(nn.Module):
    """log over a flattened view: the producing op carries no batch dimension, so the search must halve."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1)
        return self.lin(torch.log(flat).reshape(x.shape)).sum()


class SoftmaxAttention(nn.Module):
    """Hand-written attention: masked_fill(-inf) then softmax; an all-padding sample's rows are all -inf."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, -1)
        scores = (q @ k.transpose(-1, -2)).masked_fill(padding[:, None, :], float("-inf"))  # (B, L, L)
        return scores.softmax(-1) @ v


class CausalMHA(nn.Module):
    """Left-padded sequences with key padding + causal mask: padded query positions see no key."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, dim, padding_idx=0)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.out = nn.Linear(dim, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool).triu(1)
        x = self.emb(tokens)
        h, _ = self.attn(x, x, x, key_padding_mask=tokens == 0, attn_mask=causal, need_weights=False)
        return self.out(h)


class EvalOnlyNaN(nn.Module):
    """Emits NaN in eval mode only, from a constant: nothing more specific than the mode explains it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        if not self.training:
            h = h + torch.full_like(h, float("nan"))
        return h


class AlwaysNaN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + torch.full_like(x, float("nan"))


class WhereLog(nn.Module):
    """``torch.where(x > 0, log(x), 0)``: finite forward, NaN gradient from the masked branch."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.relu() * self.scale
        return torch.where(h > 0, torch.log(h), torch.zeros_like(h)).sum()


class LogSigmoid(nn.Module):
    """log(sigmoid(x)) underflows to log(0) for very negative logits in float32 (finite in float64)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.sigmoid(self.lin(x)))



class MeanPool(nn.Module):
    """Masked mean over positions: 0/0 for a sequence that is all padding."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4, padding_idx=0)
        self.out = nn.Linear(4, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keep = (tokens != 0).float().unsqueeze(-1)  # (B, L, 1)
        return self.out((self.emb(tokens) * keep).sum(1) / keep.sum(1))
