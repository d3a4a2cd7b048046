from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ur4rec.evaluate import build_eval_set, evaluate_popularity, make_batches
from ur4rec.metrics import RankingAccumulator, ranks_from_scores


def test_ranks_pessimistic_ties_and_nonfinite() -> None:
    scores = torch.tensor([
        [0.9, 0.1, 0.5, 0.3],   # target best -> rank 0
        [0.5, 0.5, 0.1, 0.7],   # one tie + one above -> rank 2
        [0.2, float("nan"), 0.1, 0.0],  # non-finite -> worst rank 3
        [float("inf"), 0.0, 0.0, 0.0],  # non-finite target -> not first
    ])
    rank, bad = ranks_from_scores(scores)
    assert rank.tolist() == [0, 2, 3, 3]
    assert bad.tolist() == [False, False, True, True]


def test_metrics_against_hand_computed_values() -> None:
    acc = RankingAccumulator("m", ks=(1, 3))
    # ranks 0, 2, 5 (finite) in batch 1; one NaN row in batch 2
    s1 = torch.tensor([[9.0, 1, 2, 3, 4, 5, 6], [5.0, 6, 7, 1, 1, 1, 1], [0.0, 1, 2, 3, 4, 5, -1]])
    acc.update(s1, torch.tensor([1, 2, 3]))
    acc.update(torch.tensor([[1.0, float("nan"), 0, 0, 0, 0, 0]]), torch.tensor([4]))
    acc.update(torch.tensor([[3.0, 1, 1, 1, 1, 1, 1]]), torch.tensor([5]))
    r = acc.result()
    n = 5
    assert r.num_samples == 5 and r.num_batches == 3
    assert (r.nonfinite_samples, r.nonfinite_batches, r.nonfinite_user_ids) == (1, 1, [4])
    assert (r.valid_samples, r.valid_batches) == (4, 2)
    assert r.metrics["hit@1"] == pytest.approx(2 / n)
    assert r.metrics["hit@3"] == pytest.approx(3 / n)
    assert r.metrics["ndcg@3"] == pytest.approx((1 + 1 + 1 / math.log2(4)) / n)
    assert r.metrics["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 6 + 1) / n)
    assert "valid / non-finite batches 2 / 1, samples 4 / 1" in r.summary_line()
    d = r.to_dict()
    assert d["nonfinite_user_ids"] == [4] and d["metrics"]["hit@1"] == pytest.approx(0.4)
    assert list(r.to_frame().columns) == ["hit@1", "hit@3", "ndcg@1", "ndcg@3", "mrr"]


def test_exclusion_for_full_ranking() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2]])
    exclude = torch.tensor([[False, True, False, False]])
    rank, bad = ranks_from_scores(scores, torch.tensor([2]), exclude)
    assert rank.tolist() == [0] and not bad.any()
    # a NaN on an excluded item does not count
    scores[0, 1] = float("nan")
    assert not ranks_from_scores(scores, torch.tensor([2]), exclude)[1].any()


def test_eval_set_negatives_fixed_per_user_and_outside_history(synth) -> None:
    es = build_eval_set(synth, "test", 10, num_negatives=15, seed=3)
    again = build_eval_set(synth, "test", 10, num_negatives=15, seed=3)
    assert torch.equal(es.candidates, again.candidates)
    for row, u in enumerate(es.user_ids.tolist()):
        cands = es.candidates[row].tolist()
        assert cands[0] == synth.sequences[u][-1]
        assert len(set(cands)) == 16 and not set(cands[1:]) & set(synth.sequences[u])
        hist = synth.sequences[u][:-1][-10:]
        assert es.input_ids[row].tolist() == [0] * (10 - len(hist)) + hist
    shard = es.shard(1, 2)
    assert torch.equal(shard.candidates, es.candidates[1::2])
    batches = make_batches(es, 16)
    assert sum(len(b["user_ids"]) for b in batches) == len(es)
    assert set(batches[0]) == {"input_ids", "candidates", "user_ids"}


def test_popularity_baseline_matches_manual_ranking(synth) -> None:
    es = build_eval_set(synth, "test", 10, num_negatives=15, seed=3)
    pop = synth.train_popularity()
    r = evaluate_popularity(pop, make_batches(es, 7))
    c = es.candidates.numpy()
    p = pop[c]
    ranks = (p[:, 1:] >= p[:, :1]).sum(1)
    assert r.metrics["hit@10"] == pytest.approx(float(np.mean(ranks < 10)))
    assert r.nonfinite_samples == 0
