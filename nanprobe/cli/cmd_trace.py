"""``nanprobe trace CHECKPOINT``: load the model and the batches, diagnose, print the report."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.text import Text

from nanprobe.cli.context import CLIContext
from nanprobe.cli.jsonout import write_report
from nanprobe.errors import InputError, ModelRaised

HELP = """\
Find where a model goes NaN/Inf on some batches, and why.

Loads CHECKPOINT (torch.load with weights_only=True unless --trust-pickle), builds the model, runs the batches
once without instrumentation, localizes the first module that produced a non-finite value, replays variants
(train/eval, dropout off, other batch sizes, float64, ...) to find the cause, and prints a report: verdict,
origin, the layers around it, the replays, the failing samples, the fix."""

EPILOG = """\
where the model comes from:
  a checkpoint written by nanprobe's monitor or ur4rec's trainer records its factory, config and data;
  otherwise pass --model MODULE:CALLABLE (called with **checkpoint["config"] when present). The state dict
  may be under model_state_dict, state_dict or model, or be the whole file. A whole pickled nn.Module needs
  --trust-pickle (unpickling runs code from the file: only for files you trust).

where the batches come from (first that applies):
  --batches FILE      a torch.save'd list of batches: dict -> model(**b), tuple/list -> model(*b),
                      tensor -> model(b). A file holding a single tensor or dict is one batch.
  --data MOD:FN       FN() returns an iterable of batches (the first --max-batches are used)
  the checkpoint's own data spec (nanprobe.data: {"factory": ..., "kwargs": ...})

exit status:
  0  clean: no non-finite value reached an output (or a gradient, with --backward)
  1  a non-finite value did, and the diagnosis was printed
  2  the input or the command was wrong (one line on stderr; --debug shows the traceback)

examples:
  nanprobe trace runs/ur4rec/nan_step.pt
  nanprobe trace ckpt.pt --model mypkg.models:build --batches bad.pt --mode train --backward
  nanprobe trace ckpt.pt --model mypkg.models:build --data mypkg.data:val_batches --json report.json
  nanprobe trace ckpt.pt --device cuda --config run.yaml --repro repro/"""

DEFAULT_DATA_BATCHES = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a file saved with torch.save")
    parser.add_argument("--model", metavar="MODULE:CALLABLE",
                        help="builds the model: called with **checkpoint['config'] (overrides a recorded factory)")
    parser.add_argument("--batches", metavar="FILE", help="torch.save'd list of batches to run")
    parser.add_argument("--data", metavar="MODULE:CALLABLE", help="returns an iterable of batches to run")
    parser.add_argument("--max-batches", metavar="N", type=_positive_int, default=None,
                        help=f"use at most N batches (default: all of --batches, the first "
                             f"{DEFAULT_DATA_BATCHES} of --data or the checkpoint's data)")
    parser.add_argument("--mode", choices=("eval", "train"), default=None,
                        help="the mode the failure happened in: eval (under no_grad) or train (grad on); "
                             "default: what the checkpoint records, else eval")
    parser.add_argument("--backward", action="store_true",
                        help="also run backward and look for the first non-finite gradient")
    parser.add_argument("--json", metavar="FILE", help="write the machine-readable report (the contract's JSON)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow arbitrary pickled objects in the checkpoint and --batches (e.g. a whole "
                             "nn.Module); unpickling runs code from the file")
    parser.add_argument("--device", metavar="DEVICE", default="cpu",
                        help="where to run the model and batches: cpu, cuda, cuda:1, mps (default: cpu)")
    parser.add_argument("--config", metavar="FILE",
                        help="YAML/JSON run config for the config audit (overrides the checkpoint's run_config)")
    parser.add_argument("--repro", metavar="DIR", help="write a standalone repro of the origin module into DIR")
    parser.add_argument("--no-replay", action="store_true",
                        help="only localize (control run + probe); skip the replay variants that find the cause")


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


def _check_outputs(args: argparse.Namespace) -> None:
    """Never write into the user's inputs: --json and --repro may not point at the checkpoint or batches."""
    inputs = [p for p in (args.checkpoint, args.batches, args.config) if p]
    for flag, target in (("--json", args.json), ("--repro", args.repro)):
        if target and any(_same_file(target, p) for p in inputs):
            raise InputError(f"{flag} {target!r} is one of the input files; choose another path "
                             "(nanprobe never overwrites its inputs)")
    if args.json:
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


@contextmanager
def _progress(ctx: CLIContext) -> Iterator[Callable[[str], None]]:
    """A rich status line on stderr while the diagnosis runs (silent when stderr is not a terminal)."""
    if not ctx.err.is_terminal:
        yield lambda label: None
        return
    with ctx.err.status("nanprobe: control run", spinner="dots") as status:
        yield lambda label: status.update(Text(f"nanprobe: {label}"))


def _run_diagnosis(model: Any, batches: list[Any], *, args: argparse.Namespace, mode: str,
                   config: dict[str, Any] | None, progress: Callable[[str], None]) -> Any:
    from nanprobe.diagnosis import diagnose

    try:
        return diagnose(model, batches, mode=mode, backward=args.backward, config=config,
                        replay=not args.no_replay, repro_dir=args.repro, progress=progress)
    except ModelRaised as e:  # the user's model raising on the user's batches: an input problem, exit 2
        raise InputError(f"{e}; check that --model and the batches match (rerun with --debug for the "
                         "traceback)") from e


def run(args: argparse.Namespace, ctx: CLIContext) -> int:
    from nanprobe.batches import to_device
    from nanprobe.loading import check_batches_fit, load_checkpoint, load_run_config, parse_device
    from nanprobe.render import render_diagnosis, tensor_notes

    _check_outputs(args)
    device = parse_device(args.device)
    loaded = load_checkpoint(args.checkpoint, model_spec=args.model, trust_pickle=args.trust_pickle, device=device)
    run_config = load_run_config(args.config) if args.config else loaded.run_config
    batches, source = _gather_batches(args, loaded)
    batches = [to_device(b, device) for b in batches]
    check_batches_fit(loaded.model, batches)
    mode = args.mode or loaded.mode or "eval"
    with _progress(ctx) as progress:
        diagnosis = _run_diagnosis(loaded.model, batches, args=args, mode=mode, config=run_config, progress=progress)
    # What ran, said once it ran: a failure before this point is the one line of the error policy alone.
    ctx.note(f"nanprobe: {type(loaded.model).__name__} from {args.checkpoint} ({loaded.describe()}), "
             f"{len(batches)} batch(es) from {source}, mode={mode}{', backward' if args.backward else ''}, "
             f"device={device}")
    ctx.out.print(render_diagnosis(diagnosis, tensors=tensor_notes(loaded.model, diagnosis.nonfinite_parameters)))
    if args.json:
        write_report(args.json, diagnosis)
        ctx.note(f"nanprobe: wrote {args.json}")
    return 1 if diagnosis.nonfinite else 0



