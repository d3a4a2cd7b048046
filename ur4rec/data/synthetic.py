"""A seeded synthetic MovieLens-like data set with the same schema as the real files.

Structure the model can learn: items belong to genres and have Zipf popularity; users prefer two genres;
each item has a fixed "sequel" item of its genre that often follows it (a sequential pattern).
Returns raw frames like :func:`ur4rec.data.files.read_movielens`, so the same preprocessing applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .files import ML100K_GENRES

__all__ = ["SyntheticSpec", "generate"]


@dataclass
class SyntheticSpec:
    num_users: int = 200
    num_items: int = 300
    num_genres: int = 8
    min_len: int = 5
    max_len: int = 60
    zipf: float = 1.1
    p_sequel: float = 0.5
    p_favourite: float = 0.35
    seed: int = 0


def _choice(rng: np.random.Generator, pool: np.ndarray, weights: np.ndarray, seen: set[int]) -> int:
    for _ in range(8):
        item = int(rng.choice(pool, p=weights))
        if item not in seen:
            return item
    free = [int(i) for i in pool if int(i) not in seen]
    return int(rng.choice(free)) if free else -1


def generate(spec: SyntheticSpec | None = None, **overrides: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions, items) frames; deterministic for a given spec."""
    spec = spec or SyntheticSpec()
    if overrides:
        spec = SyntheticSpec(**{**spec.__dict__, **overrides})
    rng = np.random.default_rng(spec.seed)
    n_items, n_genres = spec.num_items, min(spec.num_genres, len(ML100K_GENRES) - 1)
    genre_names = list(ML100K_GENRES[1 : 1 + n_genres])
    primary = rng.integers(0, n_genres, size=n_items)
    secondary = np.where(rng.random(n_items) < 0.4, rng.integers(0, n_genres, size=n_items), -1)
    pop = 1.0 / np.arange(1, n_items + 1) ** spec.zipf
    pop = pop[rng.permutation(n_items)]
    item_ids = np.arange(1, n_items + 1)
    by_genre = {g: item_ids[primary == g] for g in range(n_genres)}
    sequel = np.zeros(n_items + 1, dtype=np.int64)
    for pool in by_genre.values():
        if len(pool):
            sequel[pool] = rng.permutation(pool)
    global_w = pop / pop.sum()
    rows = []
    t0 = 880_000_000
    for u in range(1, spec.num_users + 1):
        favs = rng.choice(n_genres, size=2, replace=False)
        fav_pool = np.concatenate([by_genre[int(g)] for g in favs])
        fav_w = pop[fav_pool - 1] / pop[fav_pool - 1].sum() if len(fav_pool) else global_w
        length = int(np.exp(rng.uniform(np.log(spec.min_len), np.log(spec.max_len + 1))))
        length = min(max(length, spec.min_len), n_items)
        seen: set[int] = set()
        prev = -1
        t = t0 + int(rng.integers(0, 10_000_000))
        for _ in range(length):
            r = rng.random()
            item = -1
            if prev > 0 and r < spec.p_sequel and int(sequel[prev]) not in seen:
                item = int(sequel[prev])
            elif r < spec.p_sequel + spec.p_favourite and len(fav_pool):
                item = _choice(rng, fav_pool, fav_w, seen)
            if item < 0:
                item = _choice(rng, item_ids, global_w, seen)
            if item < 0:
                break
            seen.add(item)
            t += int(rng.integers(60, 86_400))
            rows.append((str(u), str(item), float(rng.choice([4.0, 5.0])), float(t)))
            prev = item
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    items = pd.DataFrame({
        "item": [str(i) for i in item_ids],
        "title": [f"Synthetic Movie {i}" for i in item_ids],
        "year": pd.array(rng.integers(1950, 2000, size=n_items), dtype="Int64"),
        "genres": [
            [genre_names[g] for g in sorted({int(p)} | ({int(s)} if s >= 0 else set()))]
            for p, s in zip(primary, secondary)
        ],
    })
    return inter, items
