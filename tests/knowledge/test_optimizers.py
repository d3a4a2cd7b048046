"""Pin the table's optimizer entries to torch: every class an entry names turns finite float16 gradients into
NaN/Inf parameters with its default eps (and its check says so from the state it left), the fix keeps them
finite, float32 is untouched, the entries without conditions stay finite, and every torch.optim class with an
``eps`` is in the table."""

from __future__ import annotations

import inspect

import pytest
import torch

from nanprobe.knowledge import entry_for_optimizer, load_table, run_check

TABLE = load_table()
NAMED = [(e.name, name) for e in TABLE.optimizers for name in (e.name, *e.aliases)]
STEPS = 8  # RAdam divides only from its 6th step


def _step(name: str, dtype: torch.dtype = torch.float16, **kwargs: float) -> tuple[torch.Tensor, dict, dict]:
    """A 2x3 parameter of ones whose gradient is 0 in one element, 1e-5 (its square underflows float16) in
    another and 0.5 elsewhere, stepped ``STEPS`` times."""
    param = torch.nn.Parameter(torch.ones(2, 3, dtype=dtype))
    optimizer = getattr(torch.optim, name)([param], lr=1e-3, **kwargs)
    grad = torch.full((2, 3), 0.5, dtype=dtype)
    grad[0, 0], grad[0, 1] = 0.0, 1e-5
    for _ in range(STEPS):
        param.grad = grad.clone()
        optimizer.step()
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    return param.detach(), group, optimizer.state[param]


@pytest.mark.parametrize(("entry", "name"), NAMED, ids=[n for _, n in NAMED])
def test_each_condition_happens_as_stated_and_its_fix_works(entry: str, name: str) -> None:
    for condition in entry_for_optimizer(name).conditions:
        param, group, state = _step(name)
        bad = ~torch.isfinite(param)
        # the zero gradient always; the underflowing one too, except in Adamax (a max of |g|, never squared)
        assert bad[0, 0] and bool(bad[0, 1]) == (name != "Adamax") and not bad[1].any(), (name, param)
        evidence = run_check(condition.check, name, (param, group, state), strict=True)
        assert evidence is not None and f"eps {group['eps']:g} is 0 in float16" in evidence.text
        n = int(bad.sum())
        assert f"{n} of the {n} non-finite values sit where" in evidence.text
        fixed, group, state = _step(name, eps=1e-4)
        assert torch.isfinite(fixed).all() and run_check(condition.check, name, (fixed, group, state)) is None
        wide, group, state = _step(name, dtype=torch.float32)
        assert torch.isfinite(wide).all() and run_check(condition.check, name, (wide, group, state)) is None


@pytest.mark.parametrize("name", [e.name for e in TABLE.optimizers if e.safe])
def test_optimizers_the_table_calls_safe_stay_finite_in_float16(name: str) -> None:
    param = torch.nn.Parameter(torch.ones(2, 3, dtype=torch.float16))
    optimizer = getattr(torch.optim, name)([param], lr=1e-3)
    for _ in range(STEPS):
        param.grad = torch.zeros(2, 3, dtype=torch.float16)
        optimizer.step()
    assert torch.isfinite(param).all()


def test_every_torch_optimizer_with_an_eps_is_in_the_table() -> None:
    sparse_only = {"SparseAdam"}  # steps only with sparse gradients: not pinned
    with_eps = set()
    for name, cls in inspect.getmembers(torch.optim, inspect.isclass):
        if issubclass(cls, torch.optim.Optimizer) and "eps" in inspect.signature(cls.__init__).parameters:
            with_eps.add(name)
    known = {name for _, name in NAMED} | {e.name for e in TABLE.optimizers}
    assert with_eps - sparse_only <= known, sorted(with_eps - sparse_only - known)
    assert {"Adam", "AdamW", "RMSprop", "Adagrad"} <= known


@pytest.mark.parametrize("name", [name for _, name in NAMED], ids=[name for _, name in NAMED])
def test_step_follows_gradient_says_whether_clipping_bounds_the_step(name: str) -> None:
    """Marked entries: the step grows with the gradient, and clipping it to 1 bounds the step by lr (momentum
    0.9: lr / (1 - 0.9) at most); unmarked ones: a 1000x larger gradient barely changes the step (Adam's is about
    lr per value). The last of ``STEPS`` steps is measured (RAdam's first 5 are plain momentum steps)."""
    def step(scale: float, clip: float | None = None, **kwargs: float) -> float:
        param = torch.nn.Parameter(torch.ones(8, 8))  # 2-D: Muon steps matrices only
        optimizer = getattr(torch.optim, name)([param], lr=1e-3, **kwargs)
        for _ in range(STEPS):
            before = param.detach().clone()
            param.grad = torch.linspace(-1, 1, 64).reshape(8, 8) * scale
            if clip is not None:
                torch.nn.utils.clip_grad_norm_([param], clip)
            optimizer.step()
        return float(torch.linalg.vector_norm(param.detach() - before))

    entry = entry_for_optimizer(name)
    assert entry is not None
    small, large = step(1.0), step(1000.0)
    if entry.step_follows_gradient:
        assert large > 100 * small
        assert step(1000.0, clip=1.0) <= 1e-3 * 1.0001
        assert step(1000.0, clip=1.0, momentum=0.9) <= 1e-3 / (1 - 0.9)
    else:
        assert large < 10 * small, (small, large)


def test_a_subclass_of_a_table_optimizer_gets_its_base_classes_entry() -> None:
    from nanprobe.diagnosis.optimizer import optimizer_entry

    class MySGD(torch.optim.SGD):
        pass

    class Unknown(torch.optim.Optimizer):
        pass

    param = torch.nn.Parameter(torch.ones(2))
    assert optimizer_entry(MySGD([param], lr=0.1)).name == "SGD"  # type: ignore[union-attr]
    assert optimizer_entry(torch.optim.AdamW([param])).name == "Adam"  # type: ignore[union-attr]
    assert optimizer_entry(Unknown([param], {})) is None
