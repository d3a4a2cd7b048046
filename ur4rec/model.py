"""UR4RecV2MoE: SASRec + text-preference retriever + MoE fusion.

    input_ids (B, L) left-padded item ids --> sasrec --> h (B, L, D) ---------------.
    user_ids (B,) --> retriever (frozen text embeddings -> projection) --> p (B, R)  |--> moe --> scores (B, C)
    candidates (B, C) --> item id / item text features ------------------------------'

The MoE fusion has one expert per signal (``sequence``: h . e_item, ``text``: scaled cosine of user
preference text vs item text, ``item_id``: user id embedding . item embedding + item bias) and a router
that weights them per user and candidate.

``attention_mask_style``:
- ``original``: left padding, ``key_padding_mask`` = padding and a boolean causal ``attn_mask`` through
  ``nn.MultiheadAttention`` (self-attention, batch_first). A padding query attends only to padding keys.
  Training (python path, safe softmax) stays finite; eval under ``no_grad`` takes the native fast path,
  which returns NaN for such rows, and the next block mixes them into every position of that user.
- ``safe`` (default): one boolean (B*heads, L, L) mask = causal | padding key, with the diagonal always
  allowed, so every query attends to at least itself; padded positions are zeroed after every block.
  Real positions never attend to padding, so results for real positions match ``original`` in train mode.
Both styles left-pad, so the last real position is always index L-1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import EXPERTS, ModelConfig, parse_section

__all__ = ["MoEFusion", "SASRec", "TextRetriever", "UR4RecV2MoE", "build_model"]

log = logging.getLogger(__name__)


class SASRecBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.drop1 = nn.Dropout(dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, key_padding_mask: torch.Tensor | None
                ) -> torch.Tensor:
        h = self.ln1(x)  # (B, L, D)
        a, _ = self.attn(h, h, h, key_padding_mask=key_padding_mask, attn_mask=attn_mask, need_weights=False)
        x = x + self.drop1(a)
        x = x + self.drop2(self.ffn(self.ln2(x)))
        return x


class SASRec(nn.Module):
    def __init__(self, num_items: int, max_seq_len: int, dim: int, num_blocks: int, num_heads: int,
                 dropout: float, mask_style: str) -> None:
        super().__init__()
        self.max_seq_len, self.dim, self.num_heads, self.mask_style = max_seq_len, dim, num_heads, mask_style
        self.item_emb = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.pos_emb = nn.Embedding(max_seq_len, dim)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(dim, num_heads, dropout) for _ in range(num_blocks))
        self.final_ln = nn.LayerNorm(dim)

    def masks(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(attn_mask, key_padding_mask) for the configured style. True = not allowed to attend."""
        L = input_ids.shape[1]
        pad = input_ids == 0  # (B, L)
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=input_ids.device), diagonal=1)
        if self.mask_style == "original":
            return causal, pad
        mask = causal.unsqueeze(0) | pad.unsqueeze(1)  # (B, L, L): query i may not see key j
        mask = mask & ~torch.eye(L, dtype=torch.bool, device=input_ids.device)  # always see yourself
        return mask.repeat_interleave(self.num_heads, dim=0), None  # (B*H, L, L)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        L = input_ids.shape[1]
        if self.max_seq_len < L:
            raise ValueError(f"sequence length {L} > max_seq_len {self.max_seq_len}")
        pos = torch.arange(self.max_seq_len - L, self.max_seq_len, device=input_ids.device)
        x = self.item_emb(input_ids) * math.sqrt(self.dim) + self.pos_emb(pos)  # (B, L, D)
        x = self.emb_drop(x)
        attn_mask, key_padding_mask = self.masks(input_ids)
        keep = (input_ids != 0).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        for block in self.blocks:
            if self.mask_style == "safe":
                x = x * keep
            x = block(x, attn_mask, key_padding_mask)
        return self.final_ln(x)  # (B, L, D)


class TextRetriever(nn.Module):
    """Frozen text embeddings (buffers) -> trainable projections -> scaled cosine similarity."""

    def __init__(self, num_items: int, num_users: int, text_dim: int, dim: int, dropout: float,
                 init_scale: float) -> None:
        super().__init__()
        self.register_buffer("item_text", torch.zeros(num_items + 1, text_dim))  # (I+1, T)
        self.register_buffer("user_text", torch.zeros(num_users + 1, text_dim))  # (U+1, T)
        self.item_proj = nn.Linear(text_dim, dim)
        self.user_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    @torch.no_grad()
    def set_text_embeddings(self, item_text: torch.Tensor, user_text: torch.Tensor) -> None:
        self.item_text.copy_(item_text)
        self.user_text.copy_(user_text)

    def users(self, user_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.user_proj(self.user_text[user_ids]), dim=-1)  # (B, R)

    def items(self, item_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.item_proj(self.item_text[item_ids]), dim=-1)  # (..., R)

    def score(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """u (B, R), t (B, *, C, R) -> (B, *, C)."""
        u = u.view(u.shape[0], *([1] * (t.dim() - 2)), u.shape[-1])
        return self.log_scale.exp() * (t * u).sum(-1)


class MoEFusion(nn.Module):
    """Experts over sequence, text and item-id signals; a router weights them per user and candidate."""

    def __init__(self, num_items: int, num_users: int, seq_dim: int, text_dim: int, hidden: int,
                 dropout: float, experts: list[str]) -> None:
        super().__init__()
        self.experts = list(experts)
        self.user_emb = nn.Embedding(num_users + 1, hidden)
        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.item_bias = nn.Embedding(num_items + 1, 1, padding_idx=0)
        self.router_user = nn.Linear(seq_dim + text_dim, hidden)
        self.router_item = nn.Linear(seq_dim + text_dim, hidden, bias=False)
        self.router_drop = nn.Dropout(dropout)
        self.router_out = nn.Linear(hidden, len(self.experts))

    def item_id_score(self, user_ids: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        u = self.user_emb(user_ids).view(user_ids.shape[0], *([1] * (cand.dim() - 1)), -1)
        return (u * self.item_emb(cand)).sum(-1) + self.item_bias(cand).squeeze(-1)  # (B, *, C)

    def forward(self, signals: dict[str, torch.Tensor], user_feat: torch.Tensor, item_feat: torch.Tensor
                ) -> torch.Tensor:
        """signals[e] (B, *, C); user_feat (B, *, Du); item_feat (B, *, C, Du) -> (B, *, C)."""
        r = self.router_user(user_feat).unsqueeze(-2) + self.router_item(item_feat)  # (B, *, C, H)
        weights = self.router_out(self.router_drop(F.gelu(r))).softmax(-1)  # (B, *, C, E)
        stacked = torch.stack([signals[e] for e in self.experts], dim=-1)  # (B, *, C, E)
        return (weights * stacked).sum(-1)


class UR4RecV2MoE(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.num_items < 1 or config.num_users < 1:
            raise ValueError("ModelConfig.num_items and num_users must be set from the data (>= 1)")
        self.config = config
        c = config
        self.sasrec = SASRec(c.num_items, c.max_seq_len, c.sasrec_hidden_dim, c.sasrec_num_blocks,
                             c.sasrec_num_heads, c.sasrec_dropout, c.attention_mask_style)
        self.retriever = TextRetriever(c.num_items, c.num_users, c.text_dim, c.retriever_dim,
                                       c.retriever_dropout, c.retriever_init_scale)
        self.moe = MoEFusion(c.num_items, c.num_users, c.sasrec_hidden_dim, c.retriever_dim, c.moe_hidden_dim,
                             c.moe_dropout, c.moe_experts)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def score_candidates(self, h: torch.Tensor | None, user_ids: torch.Tensor, cand: torch.Tensor,
                         expert: str | None = None) -> torch.Tensor:
        """h (B, *, D) or None (text/item_id only); cand (B, *, C) -> scores (B, *, C).

        ``expert``: None = fused MoE score; else that expert's score alone (used by the pretraining stages).
        """
        if expert is not None and expert not in EXPERTS:
            raise ValueError(f"expert must be None or one of {list(EXPERTS)}, got {expert!r}")
        need = set(self.moe.experts) if expert is None else {expert}
        signals: dict[str, torch.Tensor] = {}
        e_item = self.sasrec.item_emb(cand) if ("sequence" in need or expert is None) else None  # (B,*,C,D)
        if "sequence" in need:
            assert h is not None and e_item is not None
            signals["sequence"] = (h.unsqueeze(-2) * e_item).sum(-1)
        u_txt = t_item = None
        if "text" in need or expert is None:
            u_txt, t_item = self.retriever.users(user_ids), self.retriever.items(cand)  # (B, R), (B,*,C,R)
        if "text" in need:
            signals["text"] = self.retriever.score(u_txt, t_item)
        if "item_id" in need:
            signals["item_id"] = self.moe.item_id_score(user_ids, cand)
        if expert is not None:
            return signals[expert]
        assert h is not None and u_txt is not None and t_item is not None and e_item is not None
        u_txt = u_txt.view(u_txt.shape[0], *([1] * (h.dim() - 2)), -1).expand(*h.shape[:-1], -1)
        user_feat = torch.cat([h, u_txt], dim=-1)  # (B, *, D+R)
        item_feat = torch.cat([e_item, t_item], dim=-1)  # (B, *, C, D+R)
        return self.moe(signals, user_feat, item_feat)

    def forward(self, input_ids: torch.Tensor, candidates: torch.Tensor, user_ids: torch.Tensor,
                expert: str | None = None) -> torch.Tensor:
        """input_ids (B, L) left-padded, candidates (B, C), user_ids (B,) -> scores (B, C)."""
        needs_seq = expert in (None, "sequence")
        h = self.sasrec(input_ids)[:, -1] if needs_seq else None  # (B, D): last real position (left padding)
        return self.score_candidates(h, user_ids, candidates, expert)

    def train_logits(self, input_ids: torch.Tensor, user_ids: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                     expert: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-item logits at every position: pos/neg (B, L) -> (B, L) each."""
        needs_seq = expert in (None, "sequence")
        h = self.sasrec(input_ids) if needs_seq else None  # (B, L, D)
        scores = self.score_candidates(h, user_ids, torch.stack([pos, neg], dim=-1), expert)  # (B, L, 2)
        return scores[..., 0], scores[..., 1]


def build_model(config: Mapping[str, Any] | ModelConfig | None = None, /, **kwargs: Any) -> UR4RecV2MoE:
    """The one way to build the model from a config: ``build_model(cfg_dict)`` or ``build_model(**cfg_dict)``.

    Unknown keys raise :class:`ur4rec.config.ConfigError` naming them; keys left at their defaults are
    logged and listed in ``model.config_defaults``.
    """
    if isinstance(config, ModelConfig):
        if kwargs:
            raise TypeError("pass either a ModelConfig or keyword arguments, not both")
        cfg, defaults = config, []
    else:
        values = {**dict(config or {}), **kwargs}
        cfg, defaults = parse_section(ModelConfig, values, "model")
    if defaults:
        log.info("model config keys left at defaults: %s",
                 ", ".join(f"{k}={getattr(cfg, k)!r}" for k in defaults))
    model = UR4RecV2MoE(cfg)
    model.config_defaults = list(defaults)
    return model
