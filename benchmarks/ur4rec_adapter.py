"""ur4rec shaped like MovieLens-100k (943 users, 1682 items, L=50, 100 candidates) on a synthetic batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ur4rec.model import build_model

__all__ = ["float_masks", "make_ur4rec_batch", "make_ur4rec_train"]

USERS, ITEMS, LENGTH, CANDIDATES = 943, 1682, 50, 100


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model(num_items=ITEMS, num_users=USERS)
    text_dim = model.config.text_dim
    model.retriever.set_text_embeddings(torch.randn(ITEMS + 1, text_dim), torch.randn(USERS + 1, text_dim))
    return model


def _histories(batch: int) -> torch.Tensor:
    lengths = torch.randint(5, LENGTH + 1, (batch,))
    ids = torch.randint(1, ITEMS + 1, (batch, LENGTH))
    left_pad = torch.arange(LENGTH).unsqueeze(0) < (LENGTH - lengths).unsqueeze(1)
    return ids.masked_fill(left_pad, 0)  # (B, L), left padded


def make_ur4rec_batch(batch: int) -> tuple[nn.Module, dict[str, torch.Tensor], Callable[[Any], torch.Tensor]]:
    """The eval call ``model(**batch)``: scores for the target (column 0) and 99 negatives."""
    model = _model()
    data = {"input_ids": _histories(batch), "candidates": torch.randint(1, ITEMS + 1, (batch, CANDIDATES)),
            "user_ids": torch.randint(1, USERS + 1, (batch,))}
    target = torch.zeros(batch, CANDIDATES)
    target[:, 0] = 1.0
    return model, data, lambda scores: F.binary_cross_entropy_with_logits(scores, target)


def make_ur4rec_train(batch: int) -> Callable[[nn.Module], torch.Tensor]:
    """ur4rec's real training step: ``train_logits`` on next-item positives and sampled negatives, BCE."""
    ids = _histories(batch)
    pos = torch.roll(ids, -1, dims=1)
    neg = torch.randint(1, ITEMS + 1, ids.shape)
    users = torch.randint(1, USERS + 1, (batch,))
    real = pos != 0

    def loss(model: nn.Module) -> torch.Tensor:
        dev = model.sasrec.item_emb.weight.device
        p, n = model.train_logits(ids.to(dev), users.to(dev), pos.to(dev), neg.to(dev))  # (B, L) each
        keep = real.to(dev)
        p, n = p[keep], n[keep]
        return (F.binary_cross_entropy_with_logits(p, torch.ones_like(p))
                + F.binary_cross_entropy_with_logits(n, torch.zeros_like(n)))

    return loss


def float_masks(model: nn.Module) -> None:
    """Make SASRec build additive float masks (0 / -1e9) instead of bool ones, same attention pattern:
    DebugUnderflowOverflow cannot take bool tensors, and -inf would make it report on every step."""
    bool_masks = model.sasrec.masks

    def as_float(mask: torch.Tensor | None) -> torch.Tensor | None:
        return None if mask is None else torch.zeros(mask.shape, device=mask.device).masked_fill(mask, -1e9)

    def masks(input_ids: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        attn, padding = bool_masks(input_ids)
        return as_float(attn), as_float(padding)

    model.sasrec.masks = masks
