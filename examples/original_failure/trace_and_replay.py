"""Step 4: ask nanprobe why. `nanprobe trace` on the checkpoint, `nanprobe replay` on the monitor's bundle.

The same as running, by hand:
    nanprobe trace WORKDIR/original/best.pt --json WORKDIR/trace/trace.json
    nanprobe replay WORKDIR/original/nanprobe/eval-test-step0
The checkpoint records its model factory, config, run config (for the config audit) and eval data, so no flag
is needed. The facts the demo promises are checked on the JSON report.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _shared import console, load_choice, parser, report

from ur4rec.demo import replay_bundle, trace_checkpoint, trace_facts


def main() -> int:
    work = Path(parser(__doc__).parse_args().workdir)
    _, quick = load_choice(work)
    trace = trace_checkpoint(work / "original" / "best.pt", work / "trace", max_batches=2 if quick else None)
    console.print(trace)
    status = report(trace_facts(trace))
    bundles = sorted((work / "original" / "nanprobe").glob("eval-test-step*"))
    if bundles:
        code, replayed = replay_bundle(bundles[-1], work / "trace")
        same = (replayed.get("bundle") or {}).get("same_origin")
        console.print(f"$ nanprobe replay {bundles[-1]}   (exit {code}): verdict "
                      f"{(replayed.get('verdict') or {}).get('cause')}, same origin as recorded: {same}")
    return status


if __name__ == "__main__":
    sys.exit(main())
