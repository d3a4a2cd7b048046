"""Preprocessing as in the original pipeline, and the resulting :class:`SequenceData`.

ratings >= ``min_rating`` kept, each user's interactions sorted by time (stable: file order breaks ties),
users with fewer than ``min_seq_len`` items dropped, ids remapped to 1..N (0 is padding), and
leave-last-two-out: train = seq[:-2], validation target = seq[-2], test target = seq[-1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["SequenceData", "preprocess"]


@dataclass
class SequenceData:
    """Chronological item sequences per user, with item metadata. Users are 1..num_users, items 1..num_items."""

    name: str
    num_users: int
    num_items: int
    sequences: dict[int, list[int]]
    item_titles: dict[int, str] = field(default_factory=dict)
    item_years: dict[int, int | None] = field(default_factory=dict)
    item_genres: dict[int, list[str]] = field(default_factory=dict)
    user_raw_ids: dict[int, str] = field(default_factory=dict)
    item_raw_ids: dict[int, str] = field(default_factory=dict)

    @property
    def users(self) -> list[int]:
        return sorted(self.sequences)

    def train_sequence(self, user: int) -> list[int]:
        return self.sequences[user][:-2]

    def split(self, user: int, split: str) -> tuple[list[int], int]:
        """(input history, target) for ``split`` in {'val', 'test'}."""
        seq = self.sequences[user]
        if split == "val":
            return seq[:-2], seq[-2]
        if split == "test":
            return seq[:-1], seq[-1]
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")

    def train_popularity(self) -> np.ndarray:
        """Interaction counts per item (index 0 = padding, always 0) over training sequences only."""
        counts = np.zeros(self.num_items + 1, dtype=np.int64)
        for u in self.sequences:
            np.add.at(counts, np.asarray(self.train_sequence(u), dtype=np.int64), 1)
        counts[0] = 0
        return counts

    def num_interactions(self) -> int:
        return sum(len(s) for s in self.sequences.values())

    def summary(self) -> dict[str, float]:
        lens = np.array([len(s) for s in self.sequences.values()])
        return {"users": self.num_users, "items": self.num_items, "interactions": int(lens.sum()),
                "mean_len": float(lens.mean()), "median_len": float(np.median(lens))}


def preprocess(inter: pd.DataFrame, items: pd.DataFrame, *, name: str, min_rating: float = 4.0,
               min_seq_len: int = 5) -> SequenceData:
    df = inter[inter["rating"] >= min_rating].copy()
    df["_order"] = np.arange(len(df))
    df = df.sort_values(["timestamp", "_order"], kind="stable")
    counts = df.groupby("user")["item"].size()
    keep = counts[counts >= min_seq_len].index
    df = df[df["user"].isin(keep)]
    if df.empty:
        raise ValueError(f"{name}: no user has >= {min_seq_len} interactions with rating >= {min_rating}")

    def _key(x: str) -> tuple[int, int | str]:
        return (0, int(x)) if x.isdigit() else (1, x)

    user_raw = sorted(df["user"].unique(), key=_key)
    item_raw = sorted(df["item"].unique(), key=_key)
    user_map = {u: i + 1 for i, u in enumerate(user_raw)}
    item_map = {it: i + 1 for i, it in enumerate(item_raw)}
    sequences: dict[int, list[int]] = {}
    for u, group in df.groupby("user", sort=False):
        sequences[user_map[u]] = [item_map[i] for i in group["item"]]
    meta = items.drop_duplicates("item").set_index("item")
    titles, years, genres = {}, {}, {}
    for raw, idx in item_map.items():
        if raw in meta.index:
            row = meta.loc[raw]
            titles[idx] = str(row["title"])
            years[idx] = None if pd.isna(row["year"]) else int(row["year"])
            genres[idx] = list(row["genres"])
        else:
            titles[idx], years[idx], genres[idx] = f"item {raw}", None, []
    return SequenceData(
        name=name, num_users=len(user_raw), num_items=len(item_raw), sequences=dict(sorted(sequences.items())),
        item_titles=titles, item_years=years, item_genres=genres,
        user_raw_ids={v: k for k, v in user_map.items()}, item_raw_ids={v: k for k, v in item_map.items()},
    )
