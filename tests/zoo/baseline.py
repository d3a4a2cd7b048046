"""What today's ``nanprobe.diagnose`` says about every zoo case, against the expected answer.

    python -m tests.zoo.baseline [--json /tmp/zoo_baseline.json] [NAME ...]

Prints one row per case (expected vs. diagnosed module, cause, samples, phase; a mark per field) and the
totals; writes the rows as JSON. Not a test: the verdict engine is being rebuilt, and this is the baseline
it is measured against."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from nanprobe import diagnose
from tests.zoo.cases import CASES, CLEAN, Case
from tests.zoo.runner import build

FIELDS = ("module", "cause", "samples", "phase")


@dataclass
class Row:
    case: str
    expected: dict[str, Any]
    got: dict[str, Any]
    right: dict[str, bool | None]  # None: not scored (samples=None expects no particular rows)
    seconds: float
    error: str | None = None


def diagnose_case(case: Case) -> Row:
    model, batches = build(case)
    expected = {"status": "clean" if case.clean else "nonfinite", "module": case.module, "cause": case.cause,
                "samples": list(case.samples) if case.samples is not None else None, "phase": case.phase}
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(case.seed)
            d = diagnose(model, batches, mode=case.mode, backward=case.backward)
    except Exception as e:  # report and go on: the baseline must cover every case
        return Row(case.name, expected, {}, dict.fromkeys(FIELDS, False), time.perf_counter() - start,
                   error=f"{type(e).__name__}: {e}")
    seconds = time.perf_counter() - start
    fn = d.first_nonfinite or {}
    got = {"status": d.status, "module": fn.get("module"), "cause": d.cause, "samples": fn.get("samples"),
           "phase": fn.get("phase"), "op": fn.get("op"), "batch_index": fn.get("batch_index")}
    if case.clean:
        right: dict[str, bool | None] = dict.fromkeys(FIELDS, d.status == "clean")
    else:
        right = {
            "module": got["module"] == case.module,
            "cause": got["cause"] == case.cause,
            "samples": None if case.samples is None else got["samples"] == list(case.samples),
            "phase": got["phase"] == case.phase,
        }
    return Row(case.name, expected, got, right, seconds)


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("ok" if value else "WRONG")


def render(rows: list[Row]) -> str:
    lines = ["| case | expected module / cause / samples / phase | nanprobe today | module | cause | samples | "
             "phase |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        e, g = r.expected, r.got
        want = "clean" if e["status"] == "clean" else f"{e['module']} / {e['cause']} / {e['samples']} / {e['phase']}"
        if r.error:
            have = f"raised {r.error}"
        elif g.get("status") == "clean":
            have = "clean"
        else:
            have = f"{g.get('module')} / {g.get('cause')} / {g.get('samples')} / {g.get('phase')} ({g.get('op')})"
        marks = " | ".join(_mark(r.right[f]) for f in FIELDS)
        lines.append(f"| {r.case} | {want} | {have} | {marks} |")
    lines.append("")
    lines.extend(summary(rows))
    return "\n".join(lines)


def summary(rows: list[Row]) -> list[str]:
    broken = [r for r in rows if r.expected["status"] != "clean"]
    clean = [r for r in rows if r.expected["status"] == "clean"]
    out = [f"{len(broken)} broken cases, {len(clean)} clean cases, {sum(r.seconds for r in rows):.1f} s"]
    for f in FIELDS:
        scored = [r.right[f] for r in broken if r.right[f] is not None]
        out.append(f"{f}: {sum(bool(v) for v in scored)}/{len(scored)} right")
    all_right = sum(all(v is not False for v in r.right.values()) for r in broken)
    out.append(f"all fields right: {all_right}/{len(broken)}")
    out.append(f"clean cases reported clean: {sum(bool(r.right['module']) for r in clean)}/{len(clean)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only these cases")
    parser.add_argument("--json", default="/tmp/zoo_baseline.json", help="where to write the rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = [c for c in CASES + CLEAN if not args.names or c.name in args.names]
    rows = []
    for case in cases:
        rows.append(diagnose_case(case))
        print(f"{case.name}: {rows[-1].seconds:.1f} s", file=sys.stderr)
    print(render(rows))
    Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
