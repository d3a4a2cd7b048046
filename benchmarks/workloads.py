"""The models the benchmarks time: ur4rec (eval batch and train step), a GPT-style decoder with hand-written
attention, and an ``nn.TransformerEncoder`` classifier. Each workload gives a model, a batch, a float-mask
variant of the batch for tools that cannot take bool tensors, and a loss for the train step."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Workload", "all_workloads", "encoder_workload", "gpt_workload", "ur4rec_workload"]


@dataclass
class Workload:
    name: str
    model: nn.Module
    batch: Any  # called with nanprobe.batches.call_model
    loss: Callable[[Any], torch.Tensor]  # output -> scalar loss
    float_batch: Any = None  # same batch with float masks, for tools that reject bool inputs
    train_loss: Callable[[nn.Module], torch.Tensor] | None = None  # a training step other than forward + loss
    methods: tuple[str, ...] = ()  # model methods besides forward that the monitor must watch
    float_twin: Callable[[nn.Module], None] | None = None  # makes a copy of the model use float masks

    def training_loss(self, model: nn.Module, batch: Any = None) -> torch.Tensor:
        if self.train_loss is not None:
            return self.train_loss(model)
        from nanprobe.batches import call_model

        return self.loss(call_model(model, self.batch if batch is None else batch))


class CausalSelfAttention(nn.Module):
    """Hand-written attention: scores masked with -inf before the softmax (every row keeps its diagonal)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))  # (B, H, T, Dh)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = self.drop(F.softmax(att.masked_fill(causal, float("-inf")), dim=-1))
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 512, d: int = 64, heads: int = 4, layers: int = 4, ctx: int = 64) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (B, T, V)


def gpt_workload(batch: int = 32, ctx: int = 64, layers: int = 4, d: int = 64) -> Workload:
    torch.manual_seed(0)
    model = TinyGPT(d=d, layers=layers, ctx=ctx)
    idx = torch.randint(0, 512, (batch, ctx))
    return Workload("gpt_decoder", model, (idx,), loss=lambda out: F.cross_entropy(out.flatten(0, 1), idx.flatten()))


class EncoderClassifier(nn.Module):
    def __init__(self, vocab: int = 1000, d: int = 64, heads: int = 4, layers: int = 2, classes: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.emb(ids), src_key_padding_mask=padding_mask)  # (B, L, D)
        keep = (~padding_mask.bool()).unsqueeze(-1).to(h.dtype) if padding_mask.dtype == torch.bool else (
            (padding_mask == 0).unsqueeze(-1).to(h.dtype))
        return self.head((h * keep).sum(1) / keep.sum(1).clamp_min(1.0))


def encoder_workload(batch: int = 64, length: int = 50) -> Workload:
    torch.manual_seed(0)
    model = EncoderClassifier()
    lengths = torch.randint(5, length + 1, (batch,))
    padding = torch.arange(length).unsqueeze(0) >= lengths.unsqueeze(1)  # right padding, (B, L) bool
    ids = torch.randint(1, 1000, (batch, length)).masked_fill(padding, 0)
    labels = torch.randint(0, 8, (batch,))
    float_mask = torch.zeros(batch, length).masked_fill(padding, -1e9)
    return Workload("transformer_encoder", model, (ids, padding), loss=lambda out: F.cross_entropy(out, labels),
                    float_batch=(ids, float_mask))


def ur4rec_workload(batch: int = 64) -> Workload:
    """ur4rec's default model on a synthetic batch shaped like MovieLens-100k (L=50, 100 candidates)."""
    from benchmarks.ur4rec_adapter import float_masks, make_ur4rec_batch, make_ur4rec_train

    model, data, loss = make_ur4rec_batch(batch)
    return Workload("ur4rec", model, data, loss=loss, train_loss=make_ur4rec_train(batch),
                    methods=("train_logits",), float_twin=float_masks)


def all_workloads(quick: bool = False) -> list[Workload]:
    return [ur4rec_workload(batch=16 if quick else 64), encoder_workload(batch=16 if quick else 64),
            gpt_workload(batch=8 if quick else 32)]
