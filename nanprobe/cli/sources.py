"""What trace-like commands share: the CHECKPOINT and batch options, and turning them into a model on its
device and a list of batches (``nanprobe trace``, ``nanprobe precision``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanprobe.errors import InputError

__all__ = ["DEFAULT_DATA_BATCHES", "Sources", "add_source_arguments", "check_outputs", "load_sources"]

DEFAULT_DATA_BATCHES = 8


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """CHECKPOINT, --model, --batches, --data, --max-batches, --trust-pickle, --device."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a file saved with torch.save, a .safetensors file or a save_pretrained folder")
    parser.add_argument("--model", metavar="MODULE:CALLABLE",
                        help="builds the model: called with **checkpoint['config'] (overrides a recorded factory)")
    parser.add_argument("--batches", metavar="FILE", help="torch.save'd list of batches to run")
    parser.add_argument("--data", metavar="MODULE:CALLABLE", help="returns an iterable of batches to run")
    parser.add_argument("--max-batches", metavar="N", type=_positive_int, default=None,
                        help=f"use at most N batches (default: all of --batches, the first "
                             f"{DEFAULT_DATA_BATCHES} of --data or the checkpoint's data)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow arbitrary pickled objects in the checkpoint and --batches (e.g. a whole "
                             "nn.Module); unpickling runs code from the file")
    parser.add_argument("--device", metavar="DEVICE", default="cpu",
                        help="where to run the model and batches: cpu, cuda, cuda:1, mps (default: cpu)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def check_outputs(args: argparse.Namespace, *flags: str) -> None:
    """Never write into the user's inputs: the output options (``--json``, ``--repro``, ``--html``...) may not
    point at the checkpoint, the batches or the config; a --json file needs an existing folder."""
    inputs = [p for p in (args.checkpoint, args.batches, getattr(args, "config", None)) if p]
    for flag in flags:
        target = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if target and any(_same_file(target, p) for p in inputs):
            raise InputError(f"{flag} {target!r} is one of the input files; choose another path "
                             "(nanprobe never overwrites its inputs)")
    if getattr(args, "json", None):
        parent = Path(args.json).parent
        if not parent.is_dir():
            raise InputError(f"--json {args.json!r}: directory {str(parent)!r} does not exist")
        if Path(args.json).is_dir():
            raise InputError(f"--json {args.json!r} is a directory; give a file name")


def _gather_batches(args: argparse.Namespace, loaded: Any) -> tuple[list[Any], str]:
    from nanprobe.loading import batches_from_factory, load_batches

    if args.batches:
        batches = load_batches(args.batches, trust_pickle=args.trust_pickle)
        if args.max_batches:
            batches = batches[: args.max_batches]
        return batches, f"--batches {args.batches}"
    limit = args.max_batches or DEFAULT_DATA_BATCHES
    if args.data:
        return batches_from_factory(args.data, {}, flag="--data", limit=limit), f"--data {args.data}"
    spec = loaded.data_spec
    if spec and spec.get("factory"):
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise InputError("the checkpoint's nanprobe.data.kwargs is not a dict; pass --batches or --data")
        batches = batches_from_factory(str(spec["factory"]), kwargs, flag="the checkpoint's nanprobe.data", limit=limit)
        return batches, f"checkpoint data {spec['factory']}"
    raise InputError("no batches to run: pass --batches FILE or --data MODULE:CALLABLE "
                     "(the checkpoint records no data spec)")


@dataclass
class Sources:
    """The model (on its device) and the batches a command runs, and where they came from."""

    loaded: Any  # nanprobe.loading.Loaded
    batches: list[Any]
    source: str
    device: Any


def load_sources(args: argparse.Namespace) -> Sources:
    """Load the checkpoint and the batches the options name, move them to the device, and check that the
    batches fit the model's forward (each failure is a one-line InputError)."""
    from nanprobe.batches import to_device
    from nanprobe.loading import check_batches_fit, load_checkpoint, parse_device

    device = parse_device(args.device)
    loaded = load_checkpoint(args.checkpoint, model_spec=args.model, trust_pickle=args.trust_pickle, device=device)
    batches, source = _gather_batches(args, loaded)
    batches = [to_device(b, device) for b in batches]
    check_batches_fit(loaded.model, batches)
    return Sources(loaded=loaded, batches=batches, source=source, device=device)
