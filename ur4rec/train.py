"""``python -m ur4rec.train --config CONFIG --output-dir DIR [--resume]`` (console script ``ur4rec-train``).

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

from nanprobe import InputError

from .callbacks import Callback
from .config import load_config
from .distributed import Dist
from .nanprobe_callback import NanprobeCallback
from .trainer import Trainer

__all__ = ["main", "run"]

log = logging.getLogger("ur4rec")


def run(config: str | Path, output_dir: str | Path, *, resume: bool = False, progress: bool = True,
        overrides: dict[str, Any] | None = None, console: Console | None = None, monitor: bool = True,
        callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train from a YAML config; returns the final metrics dict (also written to ``output_dir/metrics.json``).
    ``monitor``: nanprobe's monitor on training and evaluation (bundles in ``output_dir/nanprobe/``), as a
    :class:`NanprobeCallback` given to the trainer beside ``callbacks``."""
    from .config import RunConfig

    cfg = load_config(config)
    if overrides:
        raw = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.raw.items()}
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            raw.setdefault(section, {})[key] = value
        cfg = RunConfig.from_dict(raw, path=cfg.path)
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
    if not sep or "." not in key:
        raise InputError(f"--set expects section.key=value, got {text!r}")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ur4rec-train", description="Train UR4RecV2MoE (four stages).")
    parser.add_argument("--config", required=True, help="YAML run config (see ur4rec/configs/)")
    parser.add_argument("--output-dir", required=True, help="where checkpoints and metrics.json go")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (YAML syntax), e.g. --set train.seed=1")
    parser.add_argument("--no-nanprobe", action="store_true",
                        help="no nanprobe monitor (by default a non-finite eval batch leaves a bundle in "
                             "OUTPUT_DIR/nanprobe/ and a non-finite training step stops the run with one)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    level = args.log_level.upper() if os.environ.get("RANK", "0") == "0" else "WARNING"  # rank 0 logs
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)
    try:
        overrides = dict(_parse_override(s) for s in args.set)
        metrics = run(args.config, args.output_dir, resume=args.resume, progress=not args.no_progress,
                      overrides=overrides, console=console, monitor=not args.no_nanprobe)
    except InputError as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    test = metrics["test"]
    for bundle in metrics.get("nanprobe_bundles", []):
        log.warning("non-finite values: nanprobe bundle %s (diagnose again: nanprobe replay %s)", bundle, bundle)
    log.info("final test: %s", json.dumps({"model": test["metrics"], "most_popular": test["baseline"]["metrics"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
