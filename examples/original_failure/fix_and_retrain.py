"""Step 5: the fix. ur4rec's default attention masking (the YAML without `attention_mask_style: original`) and
config-driven construction (`build_model(config)`, so sasrec_dropout 0.0 reaches the model); retrain as briefly,
evaluate at batch 64 under the monitor, beside the most-popular baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _shared import console, load_choice, parser, report

from ur4rec.demo import demo_config, evaluate_monitored, fixed_facts, train


def main() -> int:
    work = Path(parser(__doc__).parse_args().workdir)
    data, quick = load_choice(work)
    trained = train(demo_config(data, fixed=True, quick=quick), work / "fixed", console=console)
    console.print(trained)
    outcome = evaluate_monitored(trained.checkpoint, work / "fixed" / "nanprobe")
    console.print(outcome)
    return report(fixed_facts(trained, outcome))


if __name__ == "__main__":
    sys.exit(main())
