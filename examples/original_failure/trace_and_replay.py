"""Step 4: ask nanprobe why. `nanprobe.diagnose` on the checkpoint (what `nanprobe trace` runs), then the
`nanprobe replay` command on the monitor's bundle.

The same as running, by hand:
    nanprobe trace WORKDIR/original/best.pt --json WORKDIR/trace/trace.json
    nanprobe replay WORKDIR/original/nanprobe/eval-test-step0
The checkpoint records its model factory, config, run config (for the config audit) and eval data, so no flag
is needed. The facts the demo promises are checked on the JSON report.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from _shared import console, load_choice, parser, report

from ur4rec.demo import trace_checkpoint, trace_facts


def replay(bundle: Path, out: Path) -> None:
    """`nanprobe replay BUNDLE --json OUT/replay.json`: the bundle diagnosed again from its files alone."""
    exe = shutil.which("nanprobe") or str(Path(sys.executable).with_name("nanprobe"))
    if not Path(exe).is_file():
        console.print(f"diagnose the bundle again with: nanprobe replay {bundle}", markup=False)
        return
    json_path = out / "replay.json"
    code = subprocess.run([exe, "replay", str(bundle), "--json", str(json_path), "--no-color"],
                          stdout=subprocess.DEVNULL, check=False).returncode
    replayed = json.loads(json_path.read_text()) if json_path.is_file() else {}
    same = (replayed.get("bundle") or {}).get("same_origin")
    console.print(f"$ nanprobe replay {bundle}   (exit {code}): verdict "
                  f"{(replayed.get('verdict') or {}).get('cause')}, same origin as recorded: {same}", markup=False)


def main() -> int:
    work = Path(parser(__doc__).parse_args().workdir)
    _, quick = load_choice(work)
    trace = trace_checkpoint(work / "original" / "best.pt", work / "trace", max_batches=2 if quick else None)
    console.print(trace)
    status = report(trace_facts(trace))
    bundles = sorted((work / "original" / "nanprobe").glob("eval-test-step*"))
    if bundles:
        replay(bundles[-1], work / "trace")
    return status


if __name__ == "__main__":
    sys.exit(main())
