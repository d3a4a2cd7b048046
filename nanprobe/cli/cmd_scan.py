"""``nanprobe scan CHECKPOINT``: look at a checkpoint's tensors without running the model."""

from __future__ import annotations

import argparse
from pathlib import Path

from nanprobe.cli.context import CLIContext
from nanprobe.cli.jsonout import write_report
from nanprobe.errors import InputError

HELP = """\
List non-finite and extreme tensors in a checkpoint, without running the model.

Looks at parameters, buffers (e.g. BatchNorm running_var negative, NaN or huge), optimizer state (e.g. Adam
exp_avg_sq NaN or negative, a non-finite step) and a GradScaler scale (inf/nan/tiny), and ranks them by how
likely each is the culprit of a NaN (score 0..1, with the reason)."""

EPILOG = """\
CHECKPOINT is a file saved with torch.save, a .safetensors file, or a save_pretrained folder (config.json beside
model.safetensors, pytorch_model.bin or their sharded *.index.json); tensors are memory-mapped, not copied.

exit status:
  0  nothing non-finite (extreme values may still be listed)
  1  at least one tensor holds NaN/Inf
  2  the input or the command was wrong (one line on stderr; --debug shows the traceback)

examples:
  nanprobe scan runs/ckpt.pt
  nanprobe scan runs/ckpt.pt --top 5 --json scan.json
  nanprobe scan out/gpt2-finetuned/            (a save_pretrained folder)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a file saved with torch.save, a .safetensors file or a save_pretrained folder")
    parser.add_argument("--json", metavar="FILE", help="write the findings as JSON")
    parser.add_argument("--top", metavar="N", type=int, default=20, help="show the N most likely culprits "
                        "(default 20; 0 shows all); --json always has all")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow arbitrary pickled objects (e.g. a whole nn.Module); runs code from the file")


def run(args: argparse.Namespace, ctx: CLIContext) -> int:
    from nanprobe.loading import read_checkpoint
    from nanprobe.render import render_scan
    from nanprobe.scan import scan_checkpoint

    if args.top < 0:
        raise InputError(f"--top must be 0 (all) or more, not {args.top}")
    if args.json and Path(args.json).resolve() == Path(args.checkpoint).resolve():
        raise InputError(f"--json {args.json!r} is the checkpoint itself; choose another path")
    result = scan_checkpoint(read_checkpoint(args.checkpoint, trust_pickle=args.trust_pickle).obj)
    ctx.out.print(render_scan(result, top=args.top or None, title=f"nanprobe scan: {args.checkpoint}"))
    if args.json:
        write_report(args.json, {"checkpoint": str(args.checkpoint), **result.to_dict()})
        ctx.note(f"nanprobe: wrote {args.json}")
    return 1 if result.nonfinite else 0
