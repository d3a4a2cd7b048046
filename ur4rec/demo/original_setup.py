"""How the original team built UR4RecV2MoE: constructor arguments listed by hand from the YAML.

This is the one place in the repository that reproduces their mistake on purpose: ``sasrec_dropout`` is not in
the list, so the YAML's ``sasrec_dropout: 0.0`` never reaches the model (which keeps its default 0.1). The YAML
itself (ur4rec/configs/ur4rec_moe_100k_original.yaml) carries the rest of their setup: the original attention
masking, train batch 32, eval batch 64. Only the demo's entry point (``python -m ur4rec.demo``) and
``examples/original_failure/train_like_the_original.py`` use it, passing it to the demo's ``train`` step;
ur4rec's own trainer builds models with ``build_model(config)``.
"""

from __future__ import annotations

from ..config import ModelConfig, RunConfig
from ..data import SequenceData
from ..model import UR4RecV2MoE

__all__ = ["build_like_the_original"]


def build_like_the_original(cfg: RunConfig, data: SequenceData) -> UR4RecV2MoE:
    m = cfg.model
    return UR4RecV2MoE(ModelConfig(
        num_items=data.num_items,
        num_users=data.num_users,
        text_dim=m["text_dim"],
        max_seq_len=m["max_seq_len"],
        sasrec_hidden_dim=m["sasrec_hidden_dim"],
        sasrec_num_blocks=m["sasrec_num_blocks"],
        sasrec_num_heads=m["sasrec_num_heads"],
        # sasrec_dropout=m["sasrec_dropout"],   <- forgotten: the model keeps its default 0.1
        attention_mask_style=m["attention_mask_style"],
        retriever_dim=m["retriever_dim"],
        retriever_dropout=m["retriever_dropout"],
        moe_experts=m["moe_experts"],
        moe_hidden_dim=m["moe_hidden_dim"],
        moe_dropout=m["moe_dropout"],
    ))
