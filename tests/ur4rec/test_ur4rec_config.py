"""Overrides at any depth with errors that name the valid keys; model.text_dim follows the text encoder."""

from __future__ import annotations

from pathlib import Path

import pytest

from ur4rec.config import ConfigError, RunConfig, apply_overrides, load_config, resolve_text_dim
from ur4rec.train import QUICK, QUICK_DATA, cli_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "ur4rec" / "configs"


def test_override_at_any_depth(tiny_config) -> None:
    cfg = tiny_config.with_overrides({"train.stages.pretrain_sasrec.epochs": 1, "train.seed": 7,
                                      "data.synthetic.num_users": 33, "train.stages.end_to_end.lr": 0.01})
    assert cfg.train.stage("pretrain_sasrec").epochs == 1
    assert cfg.train.stage("pretrain_sasrec").lr == tiny_config.train.stage("pretrain_sasrec").lr  # untouched
    assert cfg.train.stage("end_to_end").lr == 0.01 and cfg.train.seed == 7
    assert cfg.data.synthetic["num_users"] == 33 and cfg.data.synthetic["num_items"] == 80
    assert tiny_config.train.stage("pretrain_sasrec").epochs == 2  # the original is left alone
    # a dict value replaces the whole sub-section; a missing sub-section is created
    raw = apply_overrides({"train": {}}, {"train.stages": {"joint_finetune": {"epochs": 3}}})
    assert raw == {"train": {"stages": {"joint_finetune": {"epochs": 3}}}}
    assert apply_overrides({}, {"train.stages.end_to_end.epochs": 2}) == {
        "train": {"stages": {"end_to_end": {"epochs": 2}}}}


@pytest.mark.parametrize(("key", "message"), [
    ("train.stages.pretrain_sasrec.epoch", "cannot set train.stages.pretrain_sasrec.epoch: unknown key 'epoch' in "
                                           "train.stages.pretrain_sasrec (valid keys: epochs, lr)"),
    ("train.stages.pretrain.epochs", "unknown key 'pretrain' in train.stages (valid keys: pretrain_sasrec, "
                                     "pretrain_retriever, joint_finetune, end_to_end)"),
    ("train.sead", "unknown key 'sead' in train (valid keys: seed, train_batch_size,"),
    ("seed", "unknown key 'seed' in the config (valid keys: model, train, data)"),
    ("data.synthetic.users", "unknown key 'users' in data.synthetic (valid keys: num_users, num_items,"),
    ("train.seed.value", "cannot set train.seed.value: train.seed is a value, not a section (it has no key 'value')"),
])
def test_a_wrong_key_names_the_valid_ones_at_its_level(tiny_config, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        tiny_config.with_overrides({key: 1})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def _cfg(model: dict, **data) -> RunConfig:
    return RunConfig.from_dict({"model": model, "data": {"source": "synthetic", **data}})


def test_text_dim_follows_the_encoder() -> None:
    assert resolve_text_dim({}, _cfg({}).data) == 256  # hashing, its default size
    assert resolve_text_dim({}, _cfg({}, hash_dim=96).data) == 96
    assert resolve_text_dim({"text_dim": 64}, _cfg({"text_dim": 64}).data) == 64  # hashing sized to the model
    assert resolve_text_dim({"text_dim": 64}, _cfg({"text_dim": 64}, hash_dim=64).data) == 64
    assert resolve_text_dim({}, _cfg({}, text_encoder="minilm").data) == 384
    assert resolve_text_dim({"text_dim": 384}, _cfg({"text_dim": 384}, text_encoder="minilm").data) == 384
    # the shipped configs: the default and the MiniLM one leave text_dim to the encoder
    assert "text_dim" not in load_config(CONFIGS / "ur4rec_moe_100k.yaml").model
    minilm = load_config(CONFIGS / "minilm.yaml")
    assert minilm.data.text_encoder == "minilm" and resolve_text_dim(minilm.model, minilm.data) == 384
    switched = load_config(CONFIGS / "ur4rec_moe_100k.yaml").with_overrides({"data.text_encoder": "minilm"})
    assert resolve_text_dim(switched.model, switched.data) == 384


def test_a_text_dim_against_the_encoder_fails_with_the_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        _cfg({"text_dim": 256}, text_encoder="minilm")
    assert str(caught.value) == ("model.text_dim=256 contradicts data.text_encoder: minilm, whose embeddings are "
                                 "384-d; remove model.text_dim (it follows the encoder) or set it to 384")
    with pytest.raises(ConfigError, match=r"model\.text_dim=64 contradicts data\.hash_dim=128 .*remove one of them"):
        _cfg({"text_dim": 64}, hash_dim=128)
    original = load_config(CONFIGS / "ur4rec_moe_100k_original.yaml")  # the team's YAML says text_dim: 256
    with pytest.raises(ConfigError, match=r"remove model\.text_dim"):
        original.with_overrides({"data.text_encoder": "minilm"})


def test_quick_overrides_keep_a_given_configs_data() -> None:
    alone = cli_overrides([], quick=True)
    assert alone["data.source"] == "synthetic" and set(QUICK) | set(QUICK_DATA) == set(alone)
    with_config = cli_overrides([], quick=True, own_config=True)
    assert not [k for k in with_config if k.startswith("data.")]
    # --set applies after --quick, also for the same key
    mine = cli_overrides(["train.stages.pretrain_sasrec.epochs=1", "train.eval_every=3"], quick=True)
    assert list(mine)[-2:] == ["train.stages.pretrain_sasrec.epochs", "train.eval_every"]
    assert mine["train.eval_every"] == 3
    cfg = load_config(CONFIGS / "ur4rec_moe_100k.yaml").with_overrides(mine)
    assert cfg.train.stage("pretrain_sasrec").epochs == 1 and cfg.train.stage("end_to_end").epochs == 1
    assert cfg.data.source == "synthetic" and cfg.model["max_seq_len"] == 20
