"""Evaluation: sampled candidates (target + N negatives) and full ranking, plus the most-popular baseline.

Negatives are drawn uniformly from items outside the user's whole history, with a generator seeded by
(eval_seed, split, user id): fixed per user whatever the batch size, rank count or order. The target is
always candidate column 0. Batches are dicts called as ``model(**batch)``: ``input_ids`` (B, L) long
(left-padded), ``candidates`` (B, C) long, ``user_ids`` (B,) long.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data.preprocess import SequenceData
from .metrics import EvalResult, RankingAccumulator

__all__ = [
    "EvalBatchHook",
    "EvalSet",
    "build_eval_set",
    "evaluate",
    "evaluate_full_ranking",
    "evaluate_popularity",
    "left_pad",
    "make_batches",
]

Batch = dict[str, torch.Tensor]
# called after every eval batch with (batch index, batch, scores, non-finite flags (B,))
EvalBatchHook = Callable[[int, Batch, torch.Tensor, torch.Tensor], None]


def left_pad(seq: Sequence[int], length: int) -> list[int]:
    seq = list(seq)[-length:]
    return [0] * (length - len(seq)) + seq


@dataclass
class EvalSet:
    split: str
    user_ids: torch.Tensor  # (N,)
    input_ids: torch.Tensor  # (N, L)
    candidates: torch.Tensor  # (N, 1 + num_negatives), column 0 = target

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def shard(self, rank: int, world: int) -> EvalSet:
        idx = torch.arange(rank, len(self), world)
        return EvalSet(self.split, self.user_ids[idx], self.input_ids[idx], self.candidates[idx])


def _negatives(data: SequenceData, user: int, n: int, seed: int, split: str) -> list[int]:
    seen = set(data.sequences[user])
    pool_size = data.num_items - len(seen)
    if pool_size < n:
        raise ValueError(f"user {user}: only {pool_size} items outside the history, need {n} negatives")
    rng = np.random.default_rng([seed, 0 if split == "val" else 1, user])
    out: list[int] = []
    chosen: set[int] = set()
    while len(out) < n:
        for item in rng.integers(1, data.num_items + 1, size=2 * n).tolist():
            if item not in seen and item not in chosen:
                chosen.add(item)
                out.append(item)
                if len(out) == n:
                    break
    return out


def build_eval_set(data: SequenceData, split: str, max_seq_len: int, num_negatives: int = 99,
                   seed: int = 2024) -> EvalSet:
    users, inputs, cands = [], [], []
    for u in data.users:
        hist, target = data.split(u, split)
        users.append(u)
        inputs.append(left_pad(hist, max_seq_len))
        cands.append([target, *_negatives(data, u, num_negatives, seed, split)])
    return EvalSet(split, torch.tensor(users, dtype=torch.long), torch.tensor(inputs, dtype=torch.long),
                   torch.tensor(cands, dtype=torch.long))


def make_batches(eval_set: EvalSet, batch_size: int, max_batches: int | None = None) -> list[Batch]:
    batches = []
    for start in range(0, len(eval_set), batch_size):
        sl = slice(start, start + batch_size)
        batches.append({"input_ids": eval_set.input_ids[sl], "candidates": eval_set.candidates[sl],
                        "user_ids": eval_set.user_ids[sl]})
        if max_batches is not None and len(batches) >= max_batches:
            break
    return batches


@torch.no_grad()
def evaluate(model: nn.Module, batches: Sequence[Batch], *, name: str = "model", expert: str | None = None,
             on_eval_batch: EvalBatchHook | None = None) -> EvalResult:
    """Score every batch in eval mode under no_grad; the model's train flag is restored afterwards."""
    was_training = model.training
    model.eval()
    acc = RankingAccumulator(name)
    try:
        for i, batch in enumerate(batches):
            scores = model(**batch) if expert is None else model(**batch, expert=expert)  # (B, C)
            flags = acc.update(scores, batch["user_ids"])
            if on_eval_batch is not None:
                on_eval_batch(i, batch, scores, flags)
    finally:
        model.train(was_training)
    return acc.result()


def evaluate_popularity(popularity: np.ndarray | torch.Tensor, batches: Sequence[Batch],
                        name: str = "most_popular") -> EvalResult:
    """Most-popular baseline (training counts) on the same candidates; ties pessimistic like the model."""
    pop = torch.as_tensor(np.asarray(popularity), dtype=torch.float64)
    acc = RankingAccumulator(name)
    for batch in batches:
        acc.update(pop[batch["candidates"]], batch["user_ids"])
    return acc.result()


@torch.no_grad()
def evaluate_full_ranking(model: nn.Module, data: SequenceData, eval_set: EvalSet, batch_size: int,
                          popularity: np.ndarray | None = None, chunk: int = 64
                          ) -> tuple[EvalResult, EvalResult | None]:
    """Rank the target among all items the user has not interacted with (history items excluded)."""
    was_training = model.training
    model.eval()
    acc, pop_acc = RankingAccumulator("model"), RankingAccumulator("most_popular")
    all_items = torch.arange(1, data.num_items + 1)
    pop = torch.as_tensor(popularity, dtype=torch.float64)[1:] if popularity is not None else None
    try:
        for start in range(0, len(eval_set), min(batch_size, chunk)):
            sl = slice(start, start + min(batch_size, chunk))
            users, inputs = eval_set.user_ids[sl], eval_set.input_ids[sl]
            targets = eval_set.candidates[sl, 0]
            B = users.shape[0]
            cand = all_items.expand(B, -1)  # (B, I)
            scores = model(input_ids=inputs, candidates=cand, user_ids=users)  # (B, I)
            exclude = torch.zeros(B, data.num_items, dtype=torch.bool)
            for r, u in enumerate(users.tolist()):
                hist = torch.tensor(data.sequences[int(u)], dtype=torch.long) - 1
                exclude[r, hist] = True
            tgt = targets - 1
            exclude[torch.arange(B), tgt] = False
            acc.update(scores, users, tgt, exclude)
            if pop is not None:
                pop_acc.update(pop.expand(B, -1), users, tgt, exclude)
    finally:
        model.train(was_training)
    return acc.result(), (pop_acc.result() if pop is not None else None)


def evaluate_checkpoint(path: str | Path, split: str | None = None, batch_size: int | None = None,
                        max_batches: int | None = None, *, monitor_dir: str | Path | None = None,
                        bundles: list[Path] | None = None) -> EvalResult:
    """Rebuild model and eval batches from a ur4rec checkpoint alone and evaluate (with the baseline).

    ``monitor_dir``: evaluate under nanprobe's monitor; the first non-finite batch leaves a post-mortem bundle
    there (its path is appended to ``bundles``) and the evaluation goes on, counting every non-finite sample.
    """
    from .data import load_dataset
    from .model import build_model
    from .nanprobe_callback import monitored_eval

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(**ckpt["config"])
    model.load_state_dict(ckpt["model_state_dict"])
    kwargs = dict(ckpt["nanprobe"]["data"]["kwargs"])
    kwargs.update({k: v for k, v in {"split": split, "batch_size": batch_size, "max_batches": max_batches}.items()
                   if v is not None})
    data_keys = ("source", "data_dir", "min_rating", "min_seq_len", "synthetic")
    data = load_dataset(**{k: kwargs[k] for k in data_keys})
    es = build_eval_set(data, kwargs["split"], kwargs["max_seq_len"], kwargs["num_negatives"], kwargs["eval_seed"])
    batches = make_batches(es, kwargs["batch_size"], kwargs["max_batches"])
    if monitor_dir is None:
        result = evaluate(model, batches)
    else:
        with monitored_eval(model, monitor_dir, split=kwargs["split"], config=ckpt["config"],
                            run_config=ckpt["nanprobe"].get("run_config"), bundles=bundles):
            result = evaluate(model, batches)
    result.baseline = evaluate_popularity(data.train_popularity(), batches)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m ur4rec.evaluate CHECKPOINT [--split test] [--batch-size N] [--json FILE] [--no-nanprobe]``."""
    import argparse
    import json
    import sys

    from rich.console import Console

    parser = argparse.ArgumentParser(prog="python -m ur4rec.evaluate")
    parser.add_argument("checkpoint")
    parser.add_argument("--split", choices=["val", "test"], default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-batches", type=int, default=None)
    parser.add_argument("--json", default=None, help="write the result as JSON here")
    parser.add_argument("--nanprobe-dir", default=None,
                        help="where a non-finite batch leaves its nanprobe bundle "
                             "(default: CHECKPOINT's folder/nanprobe)")
    parser.add_argument("--no-nanprobe", action="store_true", help="evaluate without nanprobe's monitor")
    args = parser.parse_args(argv)
    monitor_dir = None if args.no_nanprobe else (args.nanprobe_dir or Path(args.checkpoint).parent / "nanprobe")
    bundles: list[Path] = []
    try:
        result = evaluate_checkpoint(args.checkpoint, args.split, args.batch_size, args.max_batches,
                                     monitor_dir=monitor_dir, bundles=bundles)
    except (OSError, ValueError, KeyError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    console = Console()
    console.print(result)
    for bundle in bundles:
        console.print(f"nanprobe bundle: {bundle}  (diagnose again: nanprobe replay {bundle})", markup=False)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_dict(), f, indent=2)
    return 0 if result.finite else 1


if __name__ == "__main__":
    raise SystemExit(main())
