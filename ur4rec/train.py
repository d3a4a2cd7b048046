"""``python -m ur4rec.train --config CONFIG --output-dir DIR [--resume]`` (console script ``ur4rec-train``);
``python -m ur4rec.train --quick`` for a short run that shows every stage.

Also under ``torchrun --nproc_per_node=N -m ur4rec.train ...`` (CPU, gloo): users are sharded across
ranks, gradients averaged, evaluation metrics summed across ranks; rank 0 writes the checkpoints.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from nanprobe import InputError

from .callbacks import Callback
from .config import load_config
from .distributed import Dist
from .nanprobe_callback import NanprobeCallback
from .trainer import Trainer

__all__ = ["DEFAULT_CONFIG", "QUICK", "QUICK_DATA", "cli_overrides", "main", "run"]

log = logging.getLogger("ur4rec")

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "ur4rec_moe_100k.yaml"
# --quick: a small model and a few epochs per stage, applied on top of the config (before any --set)
QUICK: dict[str, Any] = {
    "model.max_seq_len": 20, "model.sasrec_hidden_dim": 32, "model.retriever_dim": 32, "model.moe_hidden_dim": 32,
    "train.train_batch_size": 64, "train.eval_batch_size": 128, "train.eval_every": 2, "train.patience": 2,
    "train.full_ranking": False, "train.num_threads": 1,  # small ops: a second thread costs more than it gives
    "train.stages": {"pretrain_sasrec": {"epochs": 6, "lr": 0.005}, "pretrain_retriever": {"epochs": 2, "lr": 0.003},
                     "joint_finetune": {"epochs": 2, "lr": 0.002}, "end_to_end": {"epochs": 1, "lr": 0.0005}},
}
# --quick without --config: this synthetic data set instead of the default config's MovieLens-100k
QUICK_DATA: dict[str, Any] = {"data.source": "synthetic", "data.num_negatives": 49,
                              "data.synthetic": {"num_users": 200, "num_items": 150, "max_len": 40, "seed": 0}}
QUICK_OUTPUT = "runs/quick"


def run(config: str | Path, output_dir: str | Path, *, resume: bool = False, progress: bool = True,
        overrides: dict[str, Any] | None = None, console: Console | None = None, monitor: bool = True,
        callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train from a YAML config; returns the final metrics dict (also written to ``output_dir/metrics.json``).
    ``overrides``: ``{"dotted.key": value}`` at any depth (``train.stages.pretrain_sasrec.epochs``).
    ``monitor``: nanprobe's monitor on training and evaluation (bundles in ``output_dir/nanprobe/``), as a
    :class:`NanprobeCallback` given to the trainer beside ``callbacks``."""
    cfg = load_config(config)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    watchers = list(callbacks or [])
    if monitor:
        watchers.append(NanprobeCallback(Path(output_dir) / "nanprobe"))
    dist = Dist()
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.train.num_threads)))
    try:
        trainer = Trainer(cfg, output_dir, callbacks=watchers, progress=progress, dist=dist, console=console)
        return trainer.fit(resume=resume)
    finally:
        torch.set_num_threads(threads)
        dist.close()


def _parse_override(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InputError(f"--set expects KEY=VALUE with a dotted key (e.g. train.stages.pretrain_sasrec.epochs=1), "
                         f"got {text!r}")
    return key, yaml.safe_load(value)


def cli_overrides(sets: list[str], *, quick: bool = False, own_config: bool = False) -> dict[str, Any]:
    """The overrides the command line asks for, in the order they apply: ``--quick``'s (its synthetic data only
    without ``own_config``, i.e. without ``--config``), then every ``--set KEY=VALUE``."""
    overrides: dict[str, Any] = {}
    if quick:
        overrides.update(QUICK if own_config else {**QUICK, **QUICK_DATA})
    for text in sets:
        key, value = _parse_override(text)
        overrides.pop(key, None)  # a --set applies after --quick's value for the same key
        overrides[key] = value
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ur4rec-train", description="Train UR4RecV2MoE (four stages).")
    parser.add_argument("--config", help="YAML run config (see ur4rec/configs/); required unless --quick")
    parser.add_argument("--output-dir", help=f"where checkpoints and metrics.json go (--quick: {QUICK_OUTPUT})")
    parser.add_argument("--quick", action="store_true",
                        help="a short run through all four stages: small model (max_seq_len 20, hidden 32), a few "
                             "epochs per stage, on a small synthetic data set unless --config or --set data.* says "
                             "otherwise; about 10 s on 2 CPU cores (measured: 5-11 s wall, machine shared with "
                             "other jobs)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value at any depth (YAML syntax), e.g. --set train.seed=1 "
                             "--set train.stages.pretrain_sasrec.epochs=1 --set data.text_encoder=minilm")
    parser.add_argument("--no-nanprobe", action="store_true",
                        help="no nanprobe monitor (by default a non-finite eval batch leaves a bundle in "
                             "OUTPUT_DIR/nanprobe/ and a non-finite training step stops the run with one)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not args.quick and not (args.config and args.output_dir):
        parser.error("--config and --output-dir are required (or give --quick for a short run)")
    console = Console(stderr=True)
    level = args.log_level.upper() if os.environ.get("RANK", "0") == "0" else "WARNING"  # rank 0 logs
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)
    try:
        overrides = cli_overrides(args.set, quick=args.quick, own_config=args.config is not None)
        metrics = run(args.config or DEFAULT_CONFIG, args.output_dir or QUICK_OUTPUT, resume=args.resume,
                      progress=not args.no_progress, overrides=overrides, console=console,
                      monitor=not args.no_nanprobe)
    except InputError as e:  # user and library text goes through escape(): "[minilm]" is not a markup tag
        console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        return 2
    test = metrics["test"]
    for bundle in metrics.get("nanprobe_bundles", []):
        log.warning("non-finite values: nanprobe bundle %s (diagnose again: nanprobe replay %s)", bundle, bundle)
    log.info("final test: %s", json.dumps({"model": test["metrics"], "most_popular": test["baseline"]["metrics"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
