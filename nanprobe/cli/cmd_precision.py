"""``nanprobe precision CHECKPOINT --dtype fp16|bf16``: can this model run in a lower precision, layer by layer?"""

from __future__ import annotations

import argparse
from pathlib import Path

from nanprobe.cli.context import CLIContext
from nanprobe.cli.jsonout import write_report
from nanprobe.cli.sources import add_source_arguments, check_outputs, load_sources
from nanprobe.errors import InputError

HELP = """\
Check a model's precision headroom before switching it to float16 or bfloat16.

Runs the batches in the model's own dtype and reports, layer by layer, the largest |value| of each module's
outputs against the target dtype's max, and the share of nonzero values the target dtype would flush to zero.
Layers predicted to overflow are confirmed by running each alone, on its recorded inputs, in the target dtype
(under autocast, or as a cast copy)."""

EPILOG = """\
exit status:
  0  every layer fits the target dtype
  1  some layer overflows it (predicted, and the confirmation says whether running it in that dtype agreed)
  2  the input or the command was wrong (one line on stderr)

examples:
  nanprobe precision ckpt.pt --model mypkg.models:build --batches val.pt --dtype fp16
  nanprobe precision hf-folder/ --batches batch.pt --dtype bf16 --json headroom.json --html headroom.html"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--dtype", required=True, choices=("fp16", "bf16", "float16", "bfloat16"),
                        help="the target dtype")
    parser.add_argument("--mode", choices=("eval", "train"), default="eval",
                        help="run the batches in eval (default, under no_grad) or train mode")
    parser.add_argument("--no-confirm", action="store_true",
                        help="predict only: do not run the layers predicted to overflow in the target dtype")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--html", metavar="FILE", help="write an HTML page with the per-layer bar plot")


def run(args: argparse.Namespace, ctx: CLIContext) -> int:
    from nanprobe.precision import precision_report
    from nanprobe.render import render_precision

    check_outputs(args, "--json", "--html")
    if args.html and Path(args.html).is_dir():
        raise InputError(f"--html {args.html!r} is a directory; give a file name")
    src = load_sources(args)
    report = precision_report(src.loaded.model, src.batches, dtype=args.dtype, mode=args.mode,
                              confirm=not args.no_confirm)
    ctx.note(f"nanprobe: {type(src.loaded.model).__name__} from {args.checkpoint}, {len(src.batches)} batch(es) "
             f"from {src.source}, {report.source_dtype} -> {report.dtype}")
    ctx.out.print(render_precision(report))
    if args.json:
        write_report(args.json, report)
        ctx.note(f"nanprobe: wrote {args.json}")
    if args.html:
        from nanprobe.postmortem.html import render_precision_html

        try:
            Path(args.html).write_text(render_precision_html(report), encoding="utf-8")
        except OSError as e:
            raise InputError(f"cannot write --html {args.html!r}: {e.strerror or e}") from e
        ctx.note(f"nanprobe: wrote {args.html}")
    return 1 if report.overflows else 0
