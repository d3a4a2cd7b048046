"""Every broken model of the zoo gets the right module, cause, samples and phase, within the forward-pass
budget, with the rejected candidates in its evidence; every clean model stays clean."""

from __future__ import annotations

import pytest
import torch

from nanprobe import diagnose
from nanprobe.batches import batch_size
from nanprobe.diagnosis import pass_budget
from tests.zoo.cases import CASES, CLEAN, Case
from tests.zoo.runner import build


def _diagnose(case: Case):  # type: ignore[no-untyped-def]
    model, batches = build(case)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        return diagnose(model, batches, mode=case.mode, backward=case.backward), batches


def test_the_zoo_is_big_enough() -> None:
    assert len(CASES) >= 30 and len(CLEAN) >= 6
    assert sum(c.phase == "backward" for c in CASES) >= 8
    assert sum(c.loss for c in CASES) >= 6


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_broken_model_gets_the_right_answer(case: Case) -> None:
    d, batches = _diagnose(case)
    first = d.first_nonfinite
    assert d.status == "nonfinite" and first is not None
    assert (first.module, d.cause, first.phase) == (case.module, case.cause, case.phase), d.verdict.evidence
    if case.samples is not None:
        assert first.samples == list(case.samples)
    assert first.batch_index == case.batch_index
    clean_controls = case.batch_index  # the batches before the failing one cost one control pass each
    assert d.forward_passes - clean_controls <= pass_budget(batch_size(batches[case.batch_index]) or 1)
    rejected = [e for e in d.verdict.evidence if e.startswith("rejected ")]
    assert all(case.cause not in line.split(":")[0] for line in rejected)
    assert d.verdict.fix and d.verdict.summary


@pytest.mark.parametrize("case", CLEAN, ids=[c.name for c in CLEAN])
def test_a_clean_model_stays_clean(case: Case) -> None:
    d, _ = _diagnose(case)
    assert d.status == "clean" and d.verdict is None and d.first_nonfinite is None
