"""``nanprobe trace CHECKPOINT``: load the model and the batches, diagnose, print the report."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.text import Text

from nanprobe.cli.context import CLIContext
from nanprobe.cli.jsonout import write_report
from nanprobe.cli.sources import add_source_arguments, check_outputs, load_sources
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
  --trust-pickle (unpickling runs code from the file: only for files you trust). An optimizer state_dict
  saved with it (optimizer_state_dict, optimizer, optim, Lightning's optimizer_states, or optimizer.pt in a
  checkpoint folder) is read when a parameter is non-finite: the verdict says what its step did. A Trainer
  checkpoint folder's trainer_state.json log (loss, grad_norm, learning_rate by step) is the run's history:
  a run that diverged gets training_divergence.

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

def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--mode", choices=("eval", "train"), default=None,
                        help="the mode the failure happened in: eval (under no_grad) or train (grad on); "
                             "default: what the checkpoint records, else eval")
    parser.add_argument("--backward", action="store_true",
                        help="also run backward and look for the first non-finite gradient")
    parser.add_argument("--json", metavar="FILE", help="write the machine-readable report (the contract's JSON)")
    parser.add_argument("--config", metavar="FILE",
                        help="YAML/JSON run config for the config audit (overrides the checkpoint's run_config)")
    parser.add_argument("--repro", metavar="DIR", help="write a standalone repro of the origin module into DIR")
    parser.add_argument("--no-replay", action="store_true",
                        help="only localize (control run + probe); skip the replay variants that find the cause")


@contextmanager
def _progress(ctx: CLIContext) -> Iterator[Callable[[str], None]]:
    """A rich status line on stderr while the diagnosis runs (silent when stderr is not a terminal)."""
    if not ctx.err.is_terminal:
        yield lambda label: None
        return
    with ctx.err.status("nanprobe: control run", spinner="dots") as status:
        yield lambda label: status.update(Text(f"nanprobe: {label}"))


def _run_diagnosis(model: Any, batches: list[Any], *, args: argparse.Namespace, mode: str,
                   config: dict[str, Any] | None, progress: Callable[[str], None], optimizer: Any = None,
                   history: list[dict[str, Any]] | None = None) -> Any:
    from nanprobe.diagnosis import diagnose

    try:
        return diagnose(model, batches, mode=mode, backward=args.backward, config=config,
                        replay=not args.no_replay, repro_dir=args.repro, progress=progress, optimizer=optimizer,
                        history=history)
    except ModelRaised as e:  # the user's model raising on the user's batches: an input problem, exit 2
        raise InputError(f"{e}; check that --model and the batches match (rerun with --debug for the "
                         "traceback)") from e


def run(args: argparse.Namespace, ctx: CLIContext) -> int:
    from nanprobe.diagnosis.optimizer import saved_optimizer
    from nanprobe.loading import load_run_config
    from nanprobe.render import render_diagnosis, tensor_notes

    check_outputs(args, "--json", "--repro")
    src = load_sources(args)
    loaded, batches, source, device = src.loaded, src.batches, src.source, src.device
    run_config = load_run_config(args.config) if args.config else loaded.run_config
    mode = args.mode or loaded.mode or "eval"
    optimizer = saved_optimizer(loaded.optimizer_state, loaded.model) if loaded.optimizer_state else None
    with _progress(ctx) as progress:
        diagnosis = _run_diagnosis(loaded.model, batches, args=args, mode=mode, config=run_config, progress=progress,
                                   optimizer=optimizer, history=loaded.history)
    # What ran, said once it ran: a failure before this point is the one line of the error policy alone.
    ctx.note(f"nanprobe: {type(loaded.model).__name__} from {args.checkpoint} ({loaded.describe()}), "
             f"{len(batches)} batch(es) from {source}, mode={mode}{', backward' if args.backward else ''}, "
             f"device={device}")
    ctx.out.print(render_diagnosis(diagnosis, tensors=tensor_notes(loaded.model, diagnosis.nonfinite_parameters)))
    if args.json:
        write_report(args.json, diagnosis)
        ctx.note(f"nanprobe: wrote {args.json}")
    return 1 if diagnosis.nonfinite else 0



