"""Pin the table's claims to torch's real behaviour: every condition is made to happen on tiny tensors, in
the phase and with the outcome the table states, and its check (if any) sees it in the op's actual arguments.
Every point the table says torch keeps finite is run too."""

from __future__ import annotations

import pytest
import torch

from nanprobe.knowledge import Entry, load_table
from tests.knowledge.demos import DEMOS, FINITE, NONFINITE, RAISES
from tests.knowledge.harness import check_fires, execute, kinds

TABLE = load_table()
OPS_AND_LOSSES = [e for e in TABLE if e.kind != "optimizer"]  # optimizers: tests/knowledge/test_optimizers.py
CONDITIONS = [(e.name, c.id) for e in OPS_AND_LOSSES for c in e.conditions]


def _entry(name: str) -> Entry:
    return next(e for e in TABLE if e.name == name)


def test_every_condition_has_a_demo_and_every_demo_a_condition() -> None:
    missing = sorted(set(CONDITIONS) - set(DEMOS))
    stale = sorted(set(DEMOS) - set(CONDITIONS))
    assert not missing, f"conditions with no demo: {missing}"
    assert not stale, f"demos for no condition: {stale}"


def test_every_entry_without_conditions_has_a_finite_demo() -> None:
    safe = {e.name for e in OPS_AND_LOSSES if e.safe}
    assert safe == {name for name, what in FINITE if what == "entry"}


def _matches(outcome: str, found: set[str]) -> bool:
    return bool(found) if outcome == "nonfinite" else outcome in found


@pytest.mark.parametrize(("name", "cid"), CONDITIONS, ids=[f"{n}:{c}" for n, c in CONDITIONS])
def test_condition_happens_as_stated(name: str, cid: str) -> None:
    entry = _entry(name)
    condition = entry.condition(cid)
    torch.manual_seed(0)
    run = execute(DEMOS[(name, cid)])
    if condition.outcome == "error":
        assert run.error is not None, f"{name}/{cid}: torch did not raise"
    else:
        assert run.forward_error is None, f"{name}/{cid}: raised {run.forward_error!r}"
        fwd, grad = kinds(run.forward), kinds(run.grads)
        if condition.phase == "forward":
            assert _matches(condition.outcome, fwd), f"{name}/{cid}: forward {fwd or 'finite'}"
        elif condition.phase == "backward":
            assert not fwd, f"{name}/{cid}: the forward is already {fwd}"
            assert run.backward_error is None, f"{name}/{cid}: backward raised {run.backward_error!r}"
            assert _matches(condition.outcome, grad), f"{name}/{cid}: gradient {grad or 'finite'}"
        else:
            assert _matches(condition.outcome, fwd), f"{name}/{cid}: forward {fwd or 'finite'}"
            assert grad, f"{name}/{cid}: gradient finite"
    if condition.check:
        assert check_fires(entry, condition.check, run), (
            f"{name}/{cid}: check {condition.check} saw nothing in "
            f"{sorted({c.op for c in run.calls if c.dispatch})}")


@pytest.mark.parametrize(("name", "what"), sorted(FINITE), ids=[f"{n}:{w}" for n, w in sorted(FINITE)])
def test_torch_keeps_it_finite(name: str, what: str) -> None:
    assert any(e.name == name for e in TABLE)
    run = execute(FINITE[(name, what)])
    assert run.error is None, repr(run.error)
    assert not kinds(run.forward), f"{name} ({what}): forward {kinds(run.forward)}"
    assert run.grads, f"{name} ({what}): no gradient computed"
    assert not kinds(run.grads), f"{name} ({what}): gradient {kinds(run.grads)}"


@pytest.mark.parametrize(("name", "what"), sorted(RAISES), ids=[f"{n}:{w}" for n, w in sorted(RAISES)])
def test_notes_about_errors_hold(name: str, what: str) -> None:
    assert any(e.name == name for e in TABLE)
    assert execute(RAISES[(name, what)]).forward_error is not None


@pytest.mark.parametrize(("name", "what"), sorted(NONFINITE), ids=[f"{n}:{w}" for n, w in sorted(NONFINITE)])
def test_notes_about_nonfinite_values_hold(name: str, what: str) -> None:
    assert any(e.name == name for e in TABLE)
    run = execute(NONFINITE[(name, what)])
    assert run.forward_error is None and kinds(run.forward), f"{name} ({what}): finite"
