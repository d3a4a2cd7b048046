"""Read (and write) MovieLens-100k files: RecBole atomic files and the original ``u.data``/``u.item``.

Both readers return the same two frames:
- interactions: columns ``user`` (str), ``item`` (str), ``rating`` (float), ``timestamp`` (float), in file order;
- items: columns ``item`` (str), ``title`` (str), ``year`` (Int64, may be missing), ``genres`` (list[str]).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

__all__ = [
    "ML100K_GENRES",
    "find_format",
    "read_atomic",
    "read_movielens",
    "read_original",
    "write_atomic",
    "write_original",
]

ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_YEAR_IN_TITLE = re.compile(r"\s*\((\d{4})\)\s*$")


def find_format(data_dir: Path) -> str | None:
    """'atomic' if ``ml-100k.inter``/``.item`` are there, 'original' for ``u.data``/``u.item``, else None."""
    if (data_dir / "ml-100k.inter").is_file() and (data_dir / "ml-100k.item").is_file():
        return "atomic"
    if (data_dir / "u.data").is_file() and (data_dir / "u.item").is_file():
        return "original"
    return None


def read_movielens(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    fmt = find_format(data_dir)
    if fmt == "atomic":
        return read_atomic(data_dir)
    if fmt == "original":
        return read_original(data_dir)
    raise FileNotFoundError(f"no MovieLens-100k files in {data_dir}")


def _atomic_frame(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype=str, encoding="utf-8", encoding_errors="replace",
                     keep_default_na=False, quoting=3)
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    return df


def read_atomic(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    inter = _atomic_frame(data_dir / "ml-100k.inter")
    inter = pd.DataFrame({
        "user": inter["user_id"].astype(str),
        "item": inter["item_id"].astype(str),
        "rating": inter["rating"].astype(float),
        "timestamp": inter["timestamp"].astype(float),
    })
    raw = _atomic_frame(data_dir / "ml-100k.item")
    years = pd.to_numeric(raw.get("release_year", pd.Series([""] * len(raw))), errors="coerce").astype("Int64")
    items = pd.DataFrame({
        "item": raw["item_id"].astype(str),
        "title": raw["movie_title"].astype(str).str.strip(),
        "year": years,
        "genres": [g.split() if g else [] for g in raw.get("class", pd.Series([""] * len(raw)))],
    })
    return inter, items


def read_original(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    inter = pd.read_csv(data_dir / "u.data", sep="\t", header=None, names=["user", "item", "rating", "timestamp"],
                        dtype=str)
    inter = inter.astype({"rating": float, "timestamp": float})
    rows = []
    with (data_dir / "u.item").open(encoding="latin-1") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) < 5 + len(ML100K_GENRES):
                continue
            title = parts[1]
            m = _YEAR_IN_TITLE.search(title)
            year = int(m.group(1)) if m else None
            if m:
                title = title[: m.start()]
            if year is None and parts[2][-4:].isdigit():
                year = int(parts[2][-4:])
            flags = parts[5 : 5 + len(ML100K_GENRES)]
            genres = [g for g, flag in zip(ML100K_GENRES, flags) if flag.strip() == "1"]
            rows.append({"item": parts[0], "title": title.strip(), "year": year, "genres": genres})
    items = pd.DataFrame(rows, columns=["item", "title", "year", "genres"])
    items["year"] = items["year"].astype("Int64")
    return inter, items


def write_atomic(data_dir: Path, inter: pd.DataFrame, items: pd.DataFrame) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "ml-100k.inter").open("w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for r in inter.itertuples(index=False):
            f.write(f"{r.user}\t{r.item}\t{r.rating:g}\t{r.timestamp:.0f}\n")
    with (data_dir / "ml-100k.item").open("w") as f:
        f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for r in items.itertuples(index=False):
            year = "" if pd.isna(r.year) else str(int(r.year))
            f.write(f"{r.item}\t{r.title}\t{year}\t{' '.join(r.genres)}\n")


def write_original(data_dir: Path, inter: pd.DataFrame, items: pd.DataFrame) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "u.data").open("w") as f:
        for r in inter.itertuples(index=False):
            f.write(f"{r.user}\t{r.item}\t{r.rating:g}\t{r.timestamp:.0f}\n")
    with (data_dir / "u.item").open("w", encoding="latin-1") as f:
        for r in items.itertuples(index=False):
            year = "" if pd.isna(r.year) else int(r.year)
            title = f"{r.title} ({year})" if year != "" else r.title
            date = f"01-Jan-{year}" if year != "" else ""
            flags = "|".join("1" if g in r.genres else "0" for g in ML100K_GENRES)
            f.write(f"{r.item}|{title}|{date}||http://example.invalid/{r.item}|{flags}\n")
