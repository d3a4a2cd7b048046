from __future__ import annotations

import pytest
import torch
from torch import nn

from ur4rec.config import ConfigError, ModelConfig, RunConfig, load_config
from ur4rec.model import UR4RecV2MoE, build_model

SMALL = {"num_items": 30, "num_users": 6, "text_dim": 16, "max_seq_len": 8, "sasrec_hidden_dim": 16,
         "retriever_dim": 8, "moe_hidden_dim": 8}


def _batch() -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5],   # short (left padded)
                                   [1, 2, 3, 4, 5, 6, 7, 8],   # full
                                   [0, 9, 8, 7, 6, 5, 4, 3]]),  # one pad
        "candidates": torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]),
        "user_ids": torch.tensor([1, 2, 3]),
    }


def _model(**kw: object) -> UR4RecV2MoE:
    torch.manual_seed(0)
    m = build_model({**SMALL, **kw})
    m.retriever.set_text_embeddings(torch.randn(31, 16), torch.randn(7, 16))
    return m


def test_shapes(nan_guard) -> None:
    m = nan_guard.watch(_model())  # any NaN/Inf reaching the output fails the test, localized
    b = _batch()
    assert m(**b).shape == (3, 4)
    assert m(**b, expert="sequence").shape == (3, 4)
    assert m(**b, expert="text").shape == (3, 4)
    assert m.sasrec(b["input_ids"]).shape == (3, 8, 16)
    pos, neg = m.train_logits(b["input_ids"], b["user_ids"], b["input_ids"], b["input_ids"].flip(1))
    assert pos.shape == neg.shape == (3, 8)


@pytest.mark.nanprobe(enabled=False)  # produces NaN on purpose; `pytest --nanprobe` must not fail it
def test_original_masking_nan_only_in_eval_and_only_for_padded_users() -> None:
    m = _model(attention_mask_style="original", sasrec_dropout=0.0)
    b = _batch()
    m.train()
    assert torch.isfinite(m(**b)).all()
    m.eval()
    with torch.no_grad():
        out = m(**b)
    assert (~torch.isfinite(out)).any(dim=1).tolist() == [True, False, True]
    assert torch.isnan(out[0]).all() and torch.isnan(out[2]).all()
    # with the fast path off, eval is finite again: the fast path is the mechanism
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            assert torch.isfinite(m(**b)).all()
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


def test_safe_masking_is_finite_and_equals_original_on_real_positions(nan_guard) -> None:
    zero = {"sasrec_dropout": 0.0, "retriever_dropout": 0.0, "moe_dropout": 0.0}
    safe = nan_guard.watch(_model(attention_mask_style="safe", **zero), name="safe")
    orig = _model(attention_mask_style="original", **zero)
    orig.load_state_dict(safe.state_dict())
    b = _batch()
    safe.eval()
    with torch.no_grad():
        assert torch.isfinite(safe(**b)).all()
    safe.train()
    orig.train()
    torch.testing.assert_close(safe(**b), orig(**b))  # real positions never see padding in either style
    mask, kpm = safe.sasrec.masks(b["input_ids"])
    assert kpm is None and mask.shape == (3 * 2, 8, 8)
    assert (~mask).any(dim=-1).all()  # every query may attend to something


def test_dropout_reaches_every_site() -> None:
    m = _model(sasrec_dropout=0.0, retriever_dropout=0.15, moe_dropout=0.25)
    expected = {"sasrec": 0.0, "retriever": 0.15, "moe": 0.25}
    seen = dict.fromkeys(expected, 0)
    for name, mod in m.named_modules():
        top = name.split(".")[0]
        if isinstance(mod, nn.Dropout):
            assert mod.p == expected[top], name
            seen[top] += 1
        if isinstance(mod, nn.MultiheadAttention):
            assert mod.dropout == expected[top], name
            seen[top] += 1
    assert seen["sasrec"] == 1 + 2 * 4 and seen["retriever"] == 1 and seen["moe"] == 1


def test_every_configured_value_is_visible_in_the_model() -> None:
    m = _model(sasrec_num_blocks=3, sasrec_num_heads=4, max_seq_len=8, moe_experts=["sequence", "text"])
    assert len(m.sasrec.blocks) == 3
    assert all(b.attn.num_heads == 4 and b.attn.embed_dim == 16 for b in m.sasrec.blocks)
    assert m.sasrec.pos_emb.num_embeddings == 8 and m.sasrec.item_emb.num_embeddings == 31
    assert m.retriever.item_proj.out_features == 8 and m.retriever.item_text.shape == (31, 16)
    assert m.moe.router_out.out_features == 2
    assert "sasrec_dropout" in m.config_defaults and "sasrec_num_blocks" not in m.config_defaults


def test_config_errors_name_the_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match="sasrec_dropuot"):
        build_model({**SMALL, "sasrec_dropuot": 0.0})
    with pytest.raises(ConfigError, match="attention_mask_style"):
        build_model({**SMALL, "attention_mask_style": "leftpad"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {sasrec_dropout: 0.0}\ntrain: {epochz: 3}\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_config(bad)
    with pytest.raises(ConfigError, match="optimizer"):
        RunConfig.from_dict({"optimizer": {}})
    with pytest.raises(ConfigError, match="pretrain_gpt"):
        RunConfig.from_dict({"train": {"stages": {"pretrain_gpt": {"epochs": 1}}}})
    with pytest.raises(ConfigError, match="num_items"):
        RunConfig.from_dict({"train": {"stages": {"end_to_end": {"epochs": 1, "num_items": 3}}}})


def test_rebuild_from_plain_config() -> None:
    m = _model()
    cfg = m.config.to_dict()
    assert all(isinstance(v, (int, float, str, list)) for v in cfg.values())
    m2 = build_model(**cfg)
    m2.load_state_dict(m.state_dict())
    m.eval()
    m2.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(**_batch()), m2(**_batch()))
    assert isinstance(build_model(ModelConfig(**cfg)), UR4RecV2MoE)


def test_shipped_configs_parse() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "ur4rec" / "configs"
    default = load_config(root / "ur4rec_moe_100k.yaml")
    original = load_config(root / "ur4rec_moe_100k_original.yaml")
    assert default.model["attention_mask_style"] == "safe"
    assert original.model["attention_mask_style"] == "original"
    assert original.model["sasrec_dropout"] == 0.0
    assert (original.train.train_batch_size, original.train.eval_batch_size) == (32, 64)


@pytest.mark.parametrize(
    "name", ["ur4rec_moe_100k.yaml", "ur4rec_moe_100k_original.yaml", "ur4rec_tiny_synthetic.yaml"])
def test_shipped_config_values_reach_the_model(name: str) -> None:
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "ur4rec" / "configs" / name)
    m = build_model({**cfg.model, "num_items": 20, "num_users": 5})
    full = ModelConfig(**{**cfg.model, "num_items": 20, "num_users": 5})
    for name_, mod in m.named_modules():
        key = f"{name_.split('.')[0]}_dropout"
        if isinstance(mod, nn.Dropout):
            assert mod.p == getattr(full, key), name_
        if isinstance(mod, nn.MultiheadAttention):
            assert mod.dropout == getattr(full, key), name_
            assert mod.num_heads == full.sasrec_num_heads and mod.embed_dim == full.sasrec_hidden_dim
    assert len(m.sasrec.blocks) == full.sasrec_num_blocks
    assert m.sasrec.mask_style == full.attention_mask_style
    for key, value in cfg.model.items():
        assert getattr(m.config, key) == value, key
