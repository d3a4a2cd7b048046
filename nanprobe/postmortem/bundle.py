"""The post-mortem bundle: one directory per non-finite step, written atomically, and read back.

Writing goes into ``<out_dir>/.<name>.partial-<pid>``; ``manifest.json`` and then the ``COMPLETE`` marker are
written last, and renaming the directory to ``<out_dir>/<name>`` is the very last act. A crash at any point
leaves at most a hidden ``.partial`` directory without ``COMPLETE``, which :func:`load_bundle` refuses.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nanprobe.errors import InputError
from nanprobe.report import BundleInfo, BundleReport, LayerRow, write_json

__all__ = ["COMPLETE", "MANIFEST", "STATS_COLUMNS", "Bundle", "BundleContent", "load_bundle", "write_bundle"]

COMPLETE = "COMPLETE"
MANIFEST = "manifest.json"
BUNDLE_FORMAT = 1
STATS_COLUMNS = ("index", "module", "module_type", "phase", "min", "max", "absmax", "mean", "std", "nan", "inf",
                 "role")
REQUIRED = ("report.json", "rng.pt", "batch.pt", "stats.csv", "report.md", "report.html", "env.json", "repro.txt")


@dataclass
class BundleContent:
    """Everything that goes into a bundle, in memory."""

    report: BundleReport
    batch: Any  # plain: a list of args, a dict of kwargs, or {"args": [...], "kwargs": {...}}
    rng: dict[str, Any] | None
    layers: list[LayerRow]
    env: dict[str, Any]
    model: Any = None  # what torch.save writes as model.pt (a checkpoint dict or an nn.Module), or None
    model_fallback: dict[str, Any] | None = None  # written instead when pickling the module fails
    only: tuple[str, ...] | None = None  # write just these files (an incomplete bundle: the report alone)


# -- writers (one per file; a module-level table, so a test can make one fail halfway) ---------------------

def _write_report(d: Path, c: BundleContent) -> None:
    write_json(d / "report.json", c.report.to_json_dict())


def _write_batch(d: Path, c: BundleContent) -> None:
    torch.save([c.batch], d / "batch.pt")


def _write_rng(d: Path, c: BundleContent) -> None:
    torch.save(c.rng, d / "rng.pt")


def _write_stats(d: Path, c: BundleContent) -> None:
    with (d / "stats.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(STATS_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for row in c.layers:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in STATS_COLUMNS})


def _write_env(d: Path, c: BundleContent) -> None:
    write_json(d / "env.json", c.env)


def _write_model(d: Path, c: BundleContent) -> None:
    if c.model is None:
        return
    try:
        torch.save(c.model, d / "model.pt")
    except Exception as e:  # an unpicklable module: keep the weights, say how to rebuild
        if c.model_fallback is None:
            raise
        torch.save(c.model_fallback, d / "model.pt")
        if c.report.bundle is None:
            c.report.bundle = BundleInfo()
        info = c.report.bundle.model = dict(c.report.bundle.model or {})
        info.update(kind="state_dict", trust_pickle=False, note=f"the module could not be pickled ({e}); "
                    "replay needs --model MODULE:CALLABLE")
        _write_report(d, c)


def _write_markdown(d: Path, c: BundleContent) -> None:
    from nanprobe.postmortem.markdown import render_markdown

    (d / "report.md").write_text(render_markdown(c.report.to_json_dict(), c.layers), encoding="utf-8")


def _write_html(d: Path, c: BundleContent) -> None:
    from nanprobe.postmortem.html import render_html

    (d / "report.html").write_text(render_html(c.report.to_json_dict(), c.layers, c.env), encoding="utf-8")


def _write_repro(d: Path, c: BundleContent) -> None:
    (d / "repro.txt").write_text(f"nanprobe replay {d.name}\n", encoding="utf-8")


WRITERS: list[tuple[str, Callable[[Path, BundleContent], None]]] = [
    ("report.json", _write_report), ("batch.pt", _write_batch), ("rng.pt", _write_rng), ("model.pt", _write_model),
    ("stats.csv", _write_stats), ("env.json", _write_env), ("report.md", _write_markdown),
    ("report.html", _write_html), ("repro.txt", _write_repro),
]


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    n = 1
    while path.with_name(f"{path.name}-{n}").exists():
        n += 1
    return path.with_name(f"{path.name}-{n}")


def write_bundle(out_dir: str | Path, name: str, content: BundleContent) -> Path:
    """Write the bundle atomically and return its final path (``<out_dir>/<name>``, or ``<name>-1`` ... when
    that exists). On any error the partial directory is removed and the error propagates."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for file_name, writer in WRITERS:
            if content.only is None or file_name in content.only:
                writer(tmp, content)
        final = _unique(out / name)
        if content.only is None or "repro.txt" in content.only:
            (tmp / "repro.txt").write_text(f"nanprobe replay {final}\n", encoding="utf-8")
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        write_json(tmp / MANIFEST, {"format": BUNDLE_FORMAT, "name": final.name, "files": files})
        (tmp / COMPLETE).write_text("ok\n", encoding="utf-8")
        _fsync_dir(tmp)
        os.replace(tmp, final)
        _fsync_dir(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- reading -------------------------------------------------------------------------------------------

@dataclass
class Bundle:
    """A complete bundle on disk. Files are read lazily; every problem is an :class:`InputError`."""

    path: Path
    report: BundleReport
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int | None:
        return self.report.step

    @property
    def rank(self) -> int | None:
        return self.report.rank

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.report.history)

    @property
    def model_info(self) -> dict[str, Any]:
        info = self.report.bundle.model if self.report.bundle is not None else None
        return dict(info or {"kind": "none"})

    @property
    def mode(self) -> str:
        call = self.report.monitor.call if self.report.monitor is not None else None
        return (call.mode if call is not None else None) or "eval"

    @property
    def backward(self) -> bool:
        call = self.report.monitor.call if self.report.monitor is not None else None
        return bool(call is not None and call.backward)

    @property
    def method(self) -> str | None:
        """The model method the failing call went through (None: ``forward``)."""
        call = self.report.monitor.call if self.report.monitor is not None else None
        return call.method if call is not None else None

    def batch(self, *, trust_pickle: bool = False) -> Any:
        """The failing batch in the calling convention (a tuple, a dict, or a ModelCall)."""
        from nanprobe.batches import ModelCall
        from nanprobe.loading import load_batches

        batch = load_batches(self.path / "batch.pt", trust_pickle=trust_pickle)[0]
        kind = self.report.bundle.batch_kind if self.report.bundle is not None else None
        if kind == "call" and isinstance(batch, dict):
            return ModelCall(tuple(batch.get("args") or ()), dict(batch.get("kwargs") or {}))
        if kind == "args" and isinstance(batch, list):
            return tuple(batch)
        return batch

    def rng(self) -> Any:
        from nanprobe.loading import read_torch_file
        from nanprobe.rng import RNGState

        data = read_torch_file(self.path / "rng.pt", what="bundle RNG file")
        return RNGState.from_dict(data) if data is not None else None

    def stats(self) -> list[dict[str, str]]:
        with (self.path / "stats.csv").open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def env(self) -> dict[str, Any]:
        return json.loads((self.path / "env.json").read_text(encoding="utf-8"))


def load_bundle(path: str | Path) -> Bundle:
    """Open a complete bundle; a missing, partial or foreign directory is an InputError (one line)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"bundle {str(p)!r} does not exist; check the path")
    if not p.is_dir():
        raise InputError(f"{str(p)!r} is a file, not a bundle directory (a bundle is <out_dir>/<run>-step<k>/)")
    partial = ".partial-" in p.name
    if not partial and not any((p / name).exists() for name in (COMPLETE, MANIFEST, "report.json")):
        raise InputError(f"{str(p)!r} is not a bundle (no {MANIFEST} or report.json): a bundle is a folder "
                         "<out_dir>/<run>-step<k>/ written by nanprobe's monitor or pytest --nanprobe-report")
    if not (p / COMPLETE).is_file() or not (p / MANIFEST).is_file():
        raise InputError(f"bundle {str(p)!r} is incomplete (no {COMPLETE} marker"
                         f"{': its write was interrupted' if partial else ''}); it cannot be used")
    try:
        manifest = json.loads((p / MANIFEST).read_text(encoding="utf-8"))
        report = BundleReport.from_dict(json.loads((p / "report.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"bundle {str(p)!r} is damaged: {type(e).__name__}: {e}") from e
    missing = [name for name in manifest.get("files", {}) if not (p / name).is_file()]
    if missing:
        raise InputError(f"bundle {str(p)!r} is damaged: missing {', '.join(missing)}")
    return Bundle(path=p, report=report, manifest=manifest)
