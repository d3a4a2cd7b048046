"""``nanprobe replay BUNDLE``: rebuild the model and the failing batch from a bundle and diagnose again."""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from rich.text import Text

from nanprobe.cli.context import CLIContext
from nanprobe.cli.jsonout import write_report
from nanprobe.errors import InputError, ModelRaised

HELP = """\
Re-run the diagnosis of a post-mortem bundle from the bundle alone.

Rebuilds the model (model.pt, or the checkpoint the bundle refers to), loads the failing batch and the RNG
state captured just before the failing call, and diagnoses that batch again in the mode it failed in. Says
whether the origin is the one the bundle recorded."""

EPILOG = """\
exit status:
  0  the bundle recorded no failure (an early-warning bundle) and the replay is clean
  1  the bundle recorded a failure: the replay reproduced it (its diagnosis is printed), or it did not
     (NOT REPRODUCED: where the recorded value came from, and what in the run's history explains it)
  2  BUNDLE is missing or incomplete, or the model cannot be rebuilt (one line on stderr)

examples:
  nanprobe replay nan-bundles/sasrec-step40123
  nanprobe replay nan-bundles/net-step7 --trust-pickle --json replay.json"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", help="a bundle directory (<out_dir>/<run>-step<k>)")
    parser.add_argument("--json", metavar="FILE", help="write the replayed diagnosis (the contract's JSON)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a pickled model/batch (a bundle saved without a factory); runs code from it")
    parser.add_argument("--model", metavar="MODULE:CALLABLE", help="builds the model (overrides the recorded factory)")
    parser.add_argument("--device", metavar="DEVICE", default="cpu", help="where to run (default: cpu)")


def load_model(bundle: Any, *, model_spec: str | None, trust_pickle: bool, device: Any) -> Any:
    from nanprobe.loading import load_checkpoint

    info = bundle.model_info
    kind = info.get("kind")
    if kind == "none":
        raise InputError(f"bundle {str(bundle.path)!r} holds no model (saved with save_model='none'); "
                         "use nanprobe trace CHECKPOINT --batches <bundle>/batch.pt")
    if kind == "reference":
        checkpoint = Path(str(info.get("checkpoint")))
        return load_checkpoint(checkpoint, model_spec=model_spec, trust_pickle=trust_pickle, device=device)
    if kind == "pickle" and not trust_pickle and not model_spec:
        raise InputError(f"bundle {str(bundle.path)!r} holds a pickled model (saved without a factory); unpickling "
                         "runs code from the file: rerun with --trust-pickle if you trust it, or pass --model "
                         "MODULE:CALLABLE to build it")
    return load_checkpoint(bundle.path / "model.pt", model_spec=None if kind == "pickle" else model_spec,
                           trust_pickle=trust_pickle, device=device)


def run(args: argparse.Namespace, ctx: CLIContext) -> int:
    from nanprobe.batches import to_device
    from nanprobe.diagnosis import diagnose
    from nanprobe.loading import parse_device
    from nanprobe.monitoring.methods import method_adapter
    from nanprobe.postmortem.bundle import load_bundle
    from nanprobe.render import render_diagnosis, tensor_notes
    from nanprobe.report import BundleInfo, ReplayReport, display_name

    bundle = load_bundle(args.bundle)
    if args.json and Path(args.json).resolve().parent == bundle.path.resolve():
        raise InputError(f"--json {args.json!r} is inside the bundle; choose another path (bundles are read-only)")
    device = parse_device(args.device)
    loaded = load_model(bundle, model_spec=args.model, trust_pickle=args.trust_pickle, device=device)
    batch = to_device(bundle.batch(trust_pickle=args.trust_pickle), device)
    rng = bundle.rng()
    run_config = loaded.run_config
    recorded = bundle.report.first_nonfinite
    ctx.note(f"nanprobe: replaying {bundle.path} (step {bundle.step}, rank {bundle.rank}): "
             f"{type(loaded.model).__name__}.{bundle.method or 'forward'}, mode={bundle.mode}"
             f"{', backward' if bundle.backward else ''}")
    model = method_adapter(loaded.model, bundle.method)

    def replay() -> Any:
        return diagnose(model, [batch], mode=bundle.mode, backward=bundle.backward, config=run_config,
                        rng_states=[rng], history=bundle.history or None)

    region = _recorded_autocast(bundle, device)
    try:
        if region is None:
            diagnosis = replay()
        else:
            ctx.note(f"nanprobe: under {region[1]}, as the failing call ran")
            try:
                with region[0]:
                    diagnosis = replay()
            except ModelRaised as e:  # e.g. a CUDA float16 step replayed where a kernel has no float16 version
                ctx.note(f"nanprobe: the model raised under {region[1]} ({e}); replaying without autocast")
                diagnosis = replay()
    except ModelRaised as e:
        raise InputError(f"{e} (the bundle's batch)") from e
    report = ReplayReport.from_dict(diagnosis.to_dict())
    origin = report.first_nonfinite.module if report.first_nonfinite is not None else None
    same = origin is not None and recorded is not None and origin == recorded.module
    report.bundle = BundleInfo(path=str(bundle.path), step=bundle.step, rank=bundle.rank,
                               recorded_first_nonfinite=recorded, same_origin=same)
    failed = bundle.report.status == "nonfinite"
    line: Text | None = None
    recorded_module = f"'{display_name(recorded.module)}'" if recorded is not None else "nothing"
    if report.nonfinite:
        report.reproduced = True if failed else None
        if same:
            _keep_recorded_root(report, bundle.report.verdict)
        verdict = "the same origin as recorded" if same else f"recorded {recorded_module}"
        line = Text(f"replay: origin '{display_name(origin)}' ({verdict})", style="bold" if same else "yellow")
    elif failed:
        line = _not_reproduced(bundle, report)
    ctx.out.print(render_diagnosis(report, tensors=tensor_notes(loaded.model, report.nonfinite_parameters)))
    if line is not None:
        ctx.out.print(line)
    if args.json:
        write_report(args.json, report)
        ctx.note(f"nanprobe: wrote {args.json}")
    return 1 if failed or report.nonfinite else 0


def _keep_recorded_root(report: Any, recorded: Any) -> None:
    """The bundle's verdict may rest on state the bundle does not hold (the optimizer's, read at the failing
    step): when the replay reaches the same cause at the same origin and its root says less (none, or part of
    the recorded one's evidence), keep the recorded root and fix, and say where they came from."""
    verdict = report.verdict
    if verdict is None or recorded is None or recorded.root is None or verdict.cause != recorded.cause:
        return
    mine, theirs = (verdict.root.evidence or "") if verdict.root else "", recorded.root.evidence or ""
    if verdict.root is not None and (mine == theirs or mine not in theirs):
        return
    verdict.root, verdict.fix = recorded.root, recorded.fix
    verdict.evidence.append(f"recorded at the failing step, from state the bundle does not hold: "
                            f"{recorded.root.evidence or recorded.summary}")


def _recorded_autocast(bundle: Any, device: Any) -> tuple[AbstractContextManager[Any], str] | None:
    """The autocast region the failing call ran in (a mixed-precision step) on the replay's device, with how to
    name it; None when the bundle recorded none."""
    import torch

    call = bundle.report.monitor.call if bundle.report.monitor is not None else None
    regions = [r.partition(":") for r in (call.autocast or [])] if call is not None else []
    dtypes = [getattr(torch, name, None) for _, _, name in regions]
    dtype = next((d for d in dtypes if isinstance(d, torch.dtype)), None)
    if dtype is None or call is None:
        return None
    kind = torch.device(device).type
    name = (f"autocast({kind!r}, dtype={str(dtype).removeprefix('torch.')}) (recorded: "
            f"{', '.join(call.autocast or [])})")
    return torch.autocast(kind, dtype=dtype), name


_CAME_FROM = {
    "loss": "the loss, which is computed outside the model",
    "backward": "the gradients (a backward through code outside the model, or its loss)",
    "forward": "the model's output",
}


def _not_reproduced(bundle: Any, report: Any) -> Text:
    """The re-run from the saved batch and RNG is finite although the bundle recorded a failure: say so, say
    where the recorded value came from, and let the run's history explain it when it can."""
    from nanprobe.diagnosis.from_history import history_verdict
    from nanprobe.report import Verdict

    recorded = bundle.report.first_nonfinite
    incident = bundle.report.monitor
    phase = incident.phase if incident is not None else None
    dtype = incident.call.dtype if incident is not None and incident.call is not None else None
    where = _CAME_FROM.get(phase or "forward", "the model's output")
    kind = recorded.kind if recorded is not None else "non-finite value"
    head = f"NOT REPRODUCED: the recorded {kind} at step {bundle.step} came from {where}"
    note = (f"{head}; the re-run of the saved batch from its saved RNG is finite")
    explained = history_verdict(bundle.history or (), phase=phase, kind=kind, dtype=dtype, note=note)
    if explained is not None:
        report.verdict = explained
        head += f"; the history explains it ({explained.cause}): {explained.summary.rstrip('.')}"
    else:
        report.verdict = bundle.report.verdict or Verdict(
            cause="unknown", summary=f"{head}; the re-run of the saved batch is finite.", evidence=[note],
            fix="the failure depends on state the bundle does not hold (the loss or optimizer code outside the "
                "model, weights changed since): monitor the loss (mon.check_loss) and gradients "
                "(mon.after_backward), or use nanprobe's framework callbacks")
        head += "; the history shows no divergence that explains it"
    report.status, report.first_nonfinite, report.reproduced = "nonfinite", recorded, False
    return Text(head, style="bold yellow")

