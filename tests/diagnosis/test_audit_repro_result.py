"""Config audit, repro extraction and the result object's schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from nanprobe.diagnosis import CONTRACT_KEYS, Diagnosis, audit_config, diagnose
from tests.diagnosis import models as M

CONFIG = {"model": {"sasrec_dropout": 0.0, "hidden_size": 8, "num_heads": 2, "num_blocks": 2, "text_dropout": 0.2,
                    "layer_norm_eps": 1e-5}, "train": {"lr": 1e-3}}


def test_audit_flags_the_dropout_that_never_reached_the_model() -> None:
    found = {f["key"]: f for f in audit_config(M.Recommender(), CONFIG)}
    bad = found["model.sasrec_dropout"]
    assert bad["reached"] is False and bad["config_value"] == 0.0 and bad["model_value"] == 0.1
    assert bad["modules"] == ["sasrec.blocks.0.attn", "sasrec.blocks.0.drop", "sasrec.blocks.1.attn",
                              "sasrec.blocks.1.drop"]
    assert bad["message"].startswith("sasrec_dropout: config 0.0, model 0.1 at sasrec.blocks.0.attn")
    assert "never reached the model" in bad["message"]
    for key in ("model.hidden_size", "model.num_heads", "model.num_blocks", "model.text_dropout",
                "model.layer_norm_eps"):
        assert found[key]["reached"] is True, key
    assert found["model.text_dropout"]["modules"] == ["text.1"]
    assert found["train.lr"]["reached"] is None and "not checked" in found["train.lr"]["message"]


def test_audit_is_part_of_the_diagnosis() -> None:
    d = diagnose(M.Recommender(), [torch.randn(2, 8)], config=CONFIG)
    assert d.status == "clean"
    assert any(f["key"] == "model.sasrec_dropout" and f["reached"] is False for f in d.config_audit)


def test_repro_script_reproduces(tmp_path: Path) -> None:
    d = diagnose(M.MaskedAttention().eval(), [M.fully_masked_batch(4, 6, (2,))], repro_dir=tmp_path / "repro")
    assert d.repro is not None
    script = Path(d.repro)
    assert script.name == "repro.py"
    assert {p.name for p in script.parent.iterdir()} >= {"module.pt", "state_dict.pt", "inputs.pt", "rng.pt"}
    inputs = torch.load(script.parent / "inputs.pt", weights_only=False)
    assert inputs["kwargs"]["key_padding_mask"][2].all()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "reproduced: attn (MultiheadAttention)" in done.stdout


def test_repro_of_a_custom_module(tmp_path: Path) -> None:
    x = torch.rand(4, 4) + 0.1
    x[1, 2] = 0
    d = diagnose(M.LogModel(), [x], repro_dir=tmp_path)
    done = subprocess.run([sys.executable, d.repro], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr


def test_to_dict_has_the_contract_keys_and_round_trips(tmp_path: Path) -> None:
    d = diagnose(M.MaskedAttention().eval(), [M.fully_masked_batch(4, 6, (1,))])
    data = d.to_dict()
    assert set(CONTRACT_KEYS) <= set(data)
    assert set(data) - set(CONTRACT_KEYS) == {"forward_passes", "config_audit", "sample_details", "layers",
                                              "instrumentation", "repro", "budget"}
    assert set(data["first_nonfinite"]) == {"module", "module_type", "phase", "kind", "batch_index", "samples", "op",
                                            "source"}
    assert set(data["verdict"]) == {"cause", "summary", "evidence", "fix"}
    for entry in data["replay"]:
        assert {"variant", "changes", "nonfinite", "samples"} <= set(entry)
    json.dumps(data, allow_nan=False)
    assert Diagnosis.from_dict(data).to_dict() == data
    path = d.write_json(tmp_path / "r.json")
    assert json.loads(path.read_text())["verdict"]["cause"] == "fully_masked_attention"
    roles = [row["role"] for row in data["layers"]]
    assert "origin" in roles
    origin = next(row for row in data["layers"] if row["role"] == "origin")
    assert origin["module"] == "attn" and origin["nan"] > 0


def test_replay_false_is_cheap() -> None:
    x = torch.rand(8, 4) + 0.1
    x[0, 0] = 0
    d = diagnose(M.LogModel(), [x], replay=False)
    assert d.forward_passes == 2
    assert d.first_nonfinite["op"] == "aten.log" and d.verdict["cause"] == "numerical_domain"
    assert d.replay == []


def test_progress_labels_count_every_forward_pass() -> None:
    labels: list[str] = []
    x = torch.rand(8, 4) + 0.1
    x[6, 3] = 0
    d = diagnose(M.LogModel(), [torch.rand(2, 4) + 0.1, x], progress=labels.append)
    assert len(labels) == d.forward_passes
    assert labels[:3] == ["control batch 0", "control batch 1", "localize (dispatch mode + module tracker)"]
    assert d.first_nonfinite["batch_index"] == 1


def test_unmatched_config_keys_are_not_errors() -> None:
    found = {f["key"]: f for f in audit_config(M.Recommender(), {"model": {"text_dim": 64, "sasrec_heads": 2}})}
    assert found["model.text_dim"]["checked"] is False and found["model.text_dim"]["reached"] is None
    assert found["model.sasrec_heads"]["reached"] is True


def test_unreached_config_values_show_in_the_verdict() -> None:
    tokens, padding = M.fully_masked_batch(4, 6, (3,))
    d = diagnose(M.MaskedAttention(dropout=0.1).eval(), [(tokens, padding)], config={"model": {"attn_dropout": 0.0}})
    assert any(e.startswith("config audit: attn_dropout: config 0.0, model 0.1 at attn") for e in d.verdict["evidence"])
