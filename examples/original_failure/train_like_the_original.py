"""Step 1-2: choose the data, then train UR4RecV2MoE briefly the way the original team did.

Their YAML (ur4rec/configs/ur4rec_moe_100k_original.yaml: original attention masking, train batch 32, eval
batch 64, sasrec_dropout 0.0) and their model construction (ur4rec/demo/original_setup.py: constructor arguments
listed by hand, sasrec_dropout forgotten). Training is finite; the checkpoint lands in WORKDIR/original/best.pt.

    python examples/original_failure/train_like_the_original.py [--data auto|movielens|synthetic] [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

from _shared import console, parser, report, save_choice

from ur4rec.demo import choose_data, demo_config, train, train_facts
from ur4rec.demo.original_setup import build_like_the_original


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--data", choices=("auto", "movielens", "synthetic"), default="auto")
    p.add_argument("--quick", action="store_true", help="synthetic data, small model, seconds of training")
    args = p.parse_args()
    work = Path(args.workdir)
    data = choose_data("synthetic" if args.quick and args.data == "auto" else args.data)
    console.print(data)
    save_choice(work, data, args.quick)
    outcome = train(demo_config(data, quick=args.quick), work / "original", build=build_like_the_original,
                    console=console)
    console.print(outcome)
    return report(train_facts(outcome))


if __name__ == "__main__":
    sys.exit(main())
