"""The plugin on the reference recommender: the guard passes on the default model, and ``assert_stable``
finds the eval-only NaN of the original masking style (an all-padding user) and passes on the default."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nanprobe.errors import NonFiniteError
from nanprobe.testing import assert_stable

model_mod = pytest.importorskip("ur4rec.model")


def tiny_ur4rec(style: str = "safe") -> torch.nn.Module:
    torch.manual_seed(0)
    model = model_mod.build_model(num_items=20, num_users=5, text_dim=8, max_seq_len=6, sasrec_hidden_dim=16,
                                  sasrec_num_blocks=2, sasrec_num_heads=2, retriever_dim=8, moe_hidden_dim=8,
                                  attention_mask_style=style)
    model.retriever.set_text_embeddings(torch.randn(21, 8), torch.randn(6, 8))
    return model


def batch() -> dict[str, Any]:
    """Four users with full histories (no padding): every style is finite on it."""
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(1, 21, (4, 6), generator=g),
            "candidates": torch.randint(1, 21, (4, 5), generator=g),
            "user_ids": torch.tensor([1, 2, 3, 4])}


def test_guarded_default_model_trains_and_evaluates(nan_guard: Any) -> None:
    model = nan_guard.watch(tiny_ur4rec(), name="ur4rec")
    b = batch()
    b["input_ids"][1, :3] = 0  # a left-padded user
    scores = model(**b)
    torch.nn.functional.cross_entropy(scores, torch.zeros(4, dtype=torch.long)).backward()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(**b)).all()
    assert nan_guard.failures == []


def test_assert_stable_fails_on_the_original_masking_style() -> None:
    with pytest.raises(NonFiniteError) as caught:
        assert_stable(tiny_ur4rec("original"), batch)
    message = str(caught.value)
    assert "eval / an all-padding sample (last row set to padding id 0): NaN in output samples [3]" in message
    assert "origin: module 'sasrec.blocks.0.attn' (MultiheadAttention), phase forward, kind nan" in message
    report = caught.value.report  # type: ignore[attr-defined]
    assert [r.name for r in report.failures] == ["eval/padding"]
    assert report.result("train/padding").status == "ok"  # train mode (python path) stays finite


def test_assert_stable_passes_on_the_default_style() -> None:
    report = assert_stable(tiny_ur4rec(), batch)
    assert report.passed
    assert report.result("eval/padding").status == "ok"
    assert {r.status for r in report.results} == {"ok", "skipped"}  # zero_variance: no floating input


def test_guard_catches_the_original_style_in_eval(nan_guard: Any) -> None:
    model = nan_guard.watch(tiny_ur4rec("original"), name="ur4rec").eval()
    b = batch()
    b["input_ids"][2] = 0  # a user with no history
    with pytest.raises(NonFiniteError) as caught, torch.no_grad():
        model(**b)
    assert "NaN reached the output of watched model 'ur4rec' (call #0, eval mode) in samples [2]" in str(caught.value)
    assert "origin: module 'sasrec.blocks.0.attn' (MultiheadAttention)" in str(caught.value)
    nan_guard.failures.clear()  # expected: don't let the end-of-test check raise it again
