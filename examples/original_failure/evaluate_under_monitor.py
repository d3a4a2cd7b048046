"""Step 3: evaluate the original checkpoint at batch 64 under nanprobe's monitor.

ur4rec's evaluator (the same as `python -m ur4rec.evaluate CKPT --batch-size 64`) runs inside
`nanprobe.monitor(model, on_nonfinite="dump")`: the first non-finite batch is diagnosed and saved as a bundle
in WORKDIR/original/nanprobe/, and the evaluation goes on, counting every non-finite batch and sample. Then the
original team's fix alone (the YAML's sasrec_dropout 0.0 reaching the model) is tried on the same weights.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from _shared import console, load_choice, parser, report

from ur4rec.demo import dropout_only_fix, eval_facts, evaluate_monitored


def main() -> int:
    work = Path(parser(__doc__).parse_args().workdir)
    load_choice(work)
    checkpoint = work / "original" / "best.pt"
    shutil.rmtree(work / "original" / "nanprobe", ignore_errors=True)  # bundles of an earlier run of this step
    outcome = evaluate_monitored(checkpoint, work / "original" / "nanprobe")
    console.print(outcome)
    dropout_only = dropout_only_fix(checkpoint)
    console.print(f"the original team's fix alone (sasrec_dropout 0.0 reaching the model): "
                  f"{dropout_only} non-finite samples", markup=False)
    return report(eval_facts(outcome, dropout_only))


if __name__ == "__main__":
    sys.exit(main())
