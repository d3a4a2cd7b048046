"""Pin the zoo to torch's real behaviour: every case fails exactly as its expected answer says (phase, and
only the expected samples), and every clean case stays finite."""

from __future__ import annotations

from typing import Any

import pytest

from nanprobe.batches import batch_size
from nanprobe.knowledge import CAUSES
from tests.zoo.cases import CASES, CLEAN, Case
from tests.zoo.runner import Outcome, run_case, run_rows


def _fails(case: Case, outcome: Outcome) -> bool:
    if case.phase == "backward":
        return not outcome.forward_nonfinite and bool(outcome.bad_grads)
    return outcome.forward_nonfinite


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_fails_as_expected(case: Case) -> None:
    outcomes, model, batches = run_case(case)
    for i, outcome in enumerate(outcomes):
        assert outcome.error is None, f"batch {i} raised {outcome.error!r}"
        if i != case.batch_index:
            assert not outcome.nonfinite, f"batch {i} should be clean: {outcome}"
    failing = outcomes[case.batch_index]
    assert _fails(case, failing), f"expected a {case.phase} failure, got {failing}"
    if case.samples is None:
        return
    batch = batches[case.batch_index]
    if case.phase == "forward" and failing.output_rows:
        assert failing.output_rows == list(case.samples)
    alone = run_rows(case, model, batch, list(case.samples))
    assert _fails(case, alone), f"samples {case.samples} alone do not reproduce it: {alone}"
    others = [i for i in range(_size(batch)) if i not in case.samples]
    if others:
        rest = run_rows(case, model, batch, others)
        assert not rest.nonfinite, f"the other samples {others} are not clean: {rest}"


def _size(batch: Any) -> int:
    return batch_size(batch) or 1


@pytest.mark.parametrize("case", CLEAN, ids=[c.name for c in CLEAN])
def test_clean_case_stays_clean(case: Case) -> None:
    outcomes, _, _ = run_case(case)
    for i, outcome in enumerate(outcomes):
        assert outcome.error is None, f"batch {i} raised {outcome.error!r}"
        assert not outcome.nonfinite, f"batch {i}: {outcome}"


def test_the_zoo_is_big_and_varied_enough() -> None:
    assert len(CASES) >= 40 and len(CLEAN) >= 6
    assert sum(c.phase == "backward" for c in CASES) >= 12
    assert sum(c.loss for c in CASES) >= 10
    assert len({c.name for c in CASES + CLEAN}) == len(CASES) + len(CLEAN)
    for c in CASES:
        assert c.cause in CAUSES and c.phase in ("forward", "backward") and c.module is not None
        assert c.samples is None or list(c.samples) == sorted(set(c.samples))
        assert c.mode in ("eval", "train")
    assert all(c.clean and c.module is None for c in CLEAN)
    assert {"dtype_overflow", "numerical_domain", "fully_masked_attention", "nonfinite_parameter",
            "nonfinite_input", "batch_size_dependent", "dropout_dependent"} <= {c.cause for c in CASES}
