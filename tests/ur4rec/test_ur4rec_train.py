from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from ur4rec.callbacks import Callback
from ur4rec.config import load_config
from ur4rec.evaluate import evaluate
from ur4rec.train import main, run
from ur4rec.trainer import Trainer

ORIGINAL = {"model.attention_mask_style": "original", "model.sasrec_dropout": 0.0}


def _resolve(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def test_short_training_writes_rebuildable_checkpoints(tiny_config_path: Path, tmp_path: Path) -> None:
    assert main(["--config", str(tiny_config_path), "--output-dir", str(tmp_path), "--no-progress"]) == 0
    for name in ("best.pt", "last.pt", "metrics.json", "text/user_preferences.json", "text/item_descriptions.json"):
        assert (tmp_path / name).is_file(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["stage"] for h in metrics["history"]] == [
        "pretrain_sasrec", "pretrain_sasrec", "pretrain_retriever", "joint_finetune", "end_to_end"]
    test = metrics["test"]
    assert test["nonfinite_samples"] == 0 and test["num_samples"] == metrics["data"]["users"]
    assert 0.0 <= test["metrics"]["hit@10"] <= 1.0 and "baseline" in test
    assert metrics["test_full_ranking"]["num_samples"] == test["num_samples"]

    ckpt = torch.load(tmp_path / "best.pt", weights_only=True)
    np_ = ckpt["nanprobe"]
    assert np_["format"] == 1 and np_["mode"] == "eval"
    assert np_["run_config"]["model"]["sasrec_dropout"] == 0.1
    model = _resolve(np_["factory"])(**ckpt["config"])
    model.load_state_dict(ckpt["model_state_dict"])
    batches = _resolve(np_["data"]["factory"])(**np_["data"]["kwargs"])
    assert set(batches[0]) == {"input_ids", "candidates", "user_ids"}
    assert batches[0]["input_ids"].shape[1] == ckpt["config"]["max_seq_len"]
    rebuilt = evaluate(model, batches)
    for k, v in test["metrics"].items():
        assert rebuilt.metrics[k] == pytest.approx(v), k
    assert ckpt["metrics"]["test"]["metrics"] == test["metrics"]


def test_resume_continues_where_it_stopped(tiny_config_path: Path, tmp_path: Path) -> None:
    run(tiny_config_path, tmp_path, progress=False)
    metrics = run(tiny_config_path, tmp_path, progress=False, resume=True,
                  overrides={"train.stages": {"end_to_end": {"epochs": 2, "lr": 0.001},
                                              "pretrain_sasrec": {"epochs": 2, "lr": 0.003}}})
    stages = [(h["stage"], h["epoch"]) for h in metrics["history"]]
    assert stages[-2:] == [("end_to_end", 1), ("end_to_end", 2)]
    assert stages.count(("pretrain_sasrec", 1)) == 1


def test_original_masking_nonfinite_exactly_on_padded_users(tiny_config_path: Path, tmp_path: Path) -> None:
    metrics = run(tiny_config_path, tmp_path, progress=False, overrides=ORIGINAL)
    assert all(h["loss"] == h["loss"] for h in metrics["history"])  # training finite
    cfg = load_config(tiny_config_path)
    from ur4rec.pipeline import load_data

    data = load_data(cfg.data)
    L = cfg.model["max_seq_len"]
    expected = sorted(u for u in data.users if len(data.split(u, "test")[0]) < L)
    assert expected and len(expected) < data.num_users  # both kinds of user exist
    test = metrics["test"]
    assert test["nonfinite_user_ids"] == expected
    assert test["nonfinite_samples"] == len(expected)
    assert test["valid_samples"] == data.num_users - len(expected)
    val_expected = sorted(u for u in data.users if len(data.split(u, "val")[0]) < L)
    assert metrics["val"]["nonfinite_user_ids"] == val_expected
    # the checkpoint alone reproduces it (exit 1 = non-finite scores)
    from ur4rec.evaluate import main as eval_main

    out = tmp_path / "eval.json"
    assert eval_main([str(tmp_path / "best.pt"), "--json", str(out)]) == 1
    assert json.loads(out.read_text())["nonfinite_user_ids"] == expected


def test_default_masking_has_no_nonfinite(tiny_config_path: Path, tmp_path: Path) -> None:
    metrics = run(tiny_config_path, tmp_path, progress=False)
    assert metrics["test"]["nonfinite_samples"] == 0 and metrics["val"]["nonfinite_samples"] == 0


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def context(self, trainer: Trainer, phase: str):
        import contextlib

        @contextlib.contextmanager
        def cm():
            self.events.append(f"enter:{phase}")
            yield
            self.events.append(f"exit:{phase}")

        return cm()

    def on_train_step(self, trainer, stage, step, batch, loss) -> None:
        self.events.append("step")

    def on_eval_batch(self, trainer, split, index, batch, scores, nonfinite) -> None:
        assert scores.shape == batch["candidates"].shape and nonfinite.shape == batch["user_ids"].shape
        self.events.append(f"eval_batch:{split}")


def test_callback_seam(tiny_config_path: Path, tmp_path: Path) -> None:
    cfg = load_config(tiny_config_path)
    rec = Recorder()
    trainer = Trainer(cfg, tmp_path, callbacks=[rec], progress=False)
    trainer.fit()
    assert rec.events.count("enter:train") == rec.events.count("exit:train") == 5
    assert rec.events.count("step") == trainer.state.global_step > 0
    assert rec.events.count("eval_batch:test") == 2  # 60 users at eval batch 32


def test_trainer_accepts_a_hand_built_model(tiny_config_path: Path, tmp_path: Path) -> None:
    from ur4rec.config import ConfigError, ModelConfig
    from ur4rec.model import UR4RecV2MoE
    from ur4rec.pipeline import load_data

    cfg = load_config(tiny_config_path)
    data = load_data(cfg.data)
    m = cfg.model
    # constructor arguments listed by hand, sasrec_dropout forgotten (as the original team did)
    model = UR4RecV2MoE(ModelConfig(num_items=data.num_items, num_users=data.num_users, text_dim=m["text_dim"],
                                    max_seq_len=m["max_seq_len"], sasrec_hidden_dim=m["sasrec_hidden_dim"],
                                    retriever_dim=m["retriever_dim"], moe_hidden_dim=m["moe_hidden_dim"]))
    trainer = Trainer(cfg, tmp_path, progress=False, model=model)
    assert trainer.model is model and model.sasrec.blocks[0].attn.dropout == 0.1
    assert model.retriever.item_text.abs().sum() > 0  # text embeddings filled in
    wrong = UR4RecV2MoE(ModelConfig(num_items=3, num_users=2, text_dim=m["text_dim"]))
    with pytest.raises(ConfigError, match="sized for 3 items"):
        Trainer(cfg, tmp_path, progress=False, model=wrong)


def test_probe_data_batches_are_deterministic() -> None:
    from ur4rec.probe_data import eval_batches

    kw = {"source": "synthetic", "synthetic": {"num_users": 30, "num_items": 80, "max_len": 20, "seed": 2},
          "split": "test", "batch_size": 8, "max_batches": 2, "max_seq_len": 12, "num_negatives": 10}
    a, b = eval_batches(**kw), eval_batches(**kw)
    assert len(a) == 2 and a[0]["input_ids"].shape == (8, 12) and a[0]["candidates"].shape == (8, 11)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    assert a[0]["input_ids"].dtype == torch.long and a[0]["user_ids"].tolist() == list(range(1, 9))


def test_trainer_monitors_nothing_unless_given_a_callback(tiny_config_path: Path, tmp_path: Path) -> None:
    """The trainer runs the callbacks its caller gives it and no others: no nanprobe monitor of its own."""
    from ur4rec.nanprobe_callback import NanprobeCallback

    cfg = load_config(tiny_config_path).with_overrides(
        {**ORIGINAL, "train.stages": {"pretrain_sasrec": {"epochs": 1, "lr": 0.003}}})
    plain = Trainer(cfg, tmp_path / "plain", progress=False).fit()
    assert plain["test"]["nonfinite_samples"] > 0  # something to catch, and nothing caught it
    assert "nanprobe_bundles" not in plain and not (tmp_path / "plain" / "nanprobe").exists()
    watched = Trainer(cfg, tmp_path / "watched", progress=False,
                      callbacks=[NanprobeCallback(tmp_path / "bundles")]).fit()
    assert watched["nanprobe_bundles"] and all(Path(b).parent == tmp_path / "bundles"
                                               for b in watched["nanprobe_bundles"])
    saved = json.loads((tmp_path / "watched" / "metrics.json").read_text())
    assert saved["nanprobe_bundles"] == watched["nanprobe_bundles"]  # on_fit_end runs before metrics are written


def test_the_cli_passes_the_monitor_unless_told_not_to(tiny_config_path: Path, tmp_path: Path) -> None:
    argv = ["--config", str(tiny_config_path), "--no-progress", "--set", "model.attention_mask_style=original",
            "--set", "train.stages={pretrain_sasrec: {epochs: 1, lr: 0.003}}"]
    assert main([*argv, "--output-dir", str(tmp_path / "on")]) == 0
    assert sorted(p.name.split("-step")[0] for p in (tmp_path / "on" / "nanprobe").iterdir()) == [
        "eval-test", "eval-val"]
    assert main([*argv, "--output-dir", str(tmp_path / "off"), "--no-nanprobe"]) == 0
    assert (tmp_path / "off" / "best.pt").is_file() and not (tmp_path / "off" / "nanprobe").exists()


def test_nested_set_on_the_command_line(tiny_config_path: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--config", str(tiny_config_path), "--output-dir", str(tmp_path), "--no-progress", "--no-nanprobe"]
    assert main([*base, "--set", "train.stages.pretrain_sasrec.epochs=1"]) == 0
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [h["stage"] for h in history] == ["pretrain_sasrec", "pretrain_retriever", "joint_finetune", "end_to_end"]
    capsys.readouterr()
    assert main([*base, "--set", "train.stages.pretrain_sasrec.epoch=1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("error: cannot set train.stages.pretrain_sasrec.epoch: unknown key 'epoch' in "
                           "train.stages.pretrain_sasrec (valid keys: epochs, lr)")


@pytest.mark.slow
def test_quick_run_from_the_command_line(tmp_path: Path) -> None:
    """`python -m ur4rec.train --quick`: every stage, on synthetic data, under the monitor, in seconds."""
    import os
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ur4rec.train", "--quick", "--output-dir", str(tmp_path / "q"),
                           "--no-progress"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
                          check=False)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "q" / "metrics.json").read_text())
    assert {h["stage"] for h in metrics["history"]} == {"pretrain_sasrec", "pretrain_retriever", "joint_finetune",
                                                        "end_to_end"}
    assert metrics["data"]["name"].startswith("synthetic") and metrics["data"]["users"] == 200
    assert metrics["test"]["nonfinite_samples"] == 0 and metrics["nanprobe_bundles"] == []  # monitored, clean
    assert metrics["test"]["metrics"]["hit@10"] > metrics["test"]["baseline"]["metrics"]["hit@10"]
    print(f"python -m ur4rec.train --quick: {seconds:.1f} s wall")
    help_text = subprocess.run([sys.executable, "-m", "ur4rec.train", "--help"], capture_output=True, text=True,
                               env=env, check=True).stdout
    assert "--quick" in " ".join(help_text.split()) and "s on 2 CPU cores" in " ".join(help_text.split())
