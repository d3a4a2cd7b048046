"""Bits the four scripts share: the work folder layout, the data choice made in step 1, printing facts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from ur4rec.demo import DataChoice, Fact, render_facts

console = Console()


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--workdir", default="runs/original_failure", help="where every step reads and writes")
    return p


def save_choice(workdir: Path, data: DataChoice, quick: bool) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "demo.json").write_text(json.dumps({"data": data.to_dict(), "quick": quick}, indent=2))


def load_choice(workdir: Path) -> tuple[DataChoice, bool]:
    path = workdir / "demo.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run train_like_the_original.py --workdir {workdir} first")
    saved = json.loads(path.read_text())
    return DataChoice(**saved["data"]), bool(saved["quick"])


def report(facts: list[Fact]) -> int:
    """Print the checked facts; the exit status says whether all held."""
    console.print(render_facts(facts))
    return 0 if all(f.ok for f in facts) else 1
