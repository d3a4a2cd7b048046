"""Handling a failure never harms the user's run: a monitored run with a NaN at a known step ends bitwise equal
to the bare run (losses, parameters, buffers, optimizer state, RNG, GradScaler), the user's own backward after
a diagnosis inside the step succeeds, and nanprobe's own failures (a diagnosis that raises, a bundle write that
fails, running out of memory, an interrupt) never become the user's."""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import nanprobe.monitoring.failure as failure_mod
from nanprobe.errors import NonFiniteError
from nanprobe.monitoring import NonFiniteWarning, monitor
from nanprobe.postmortem import bundle as bundle_mod
from nanprobe.postmortem.bundle import load_bundle
from nanprobe.testing.guard import NanGuard

STEPS = 8
BAD_STEP = 3


# -- models that keep tensors the autograd graph saves -------------------------------------------------
class IndexBuffer(nn.Module):
    """An embedding indexed by a ``position_ids`` buffer (saved for backward), as in Hugging Face models."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, 8)
        self.register_buffer("position_ids", torch.arange(16).unsqueeze(0))
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.emb(self.position_ids[:, : x.shape[1]])  # (1, L, 8)
        return self.head(self.drop(x + pos)).squeeze(-1).mean(-1)  # (B,)


class BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.mean(1)).squeeze(-1)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, dropout=0.1, batch_first=True)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.attn(x, x, x, need_weights=False)
        return self.head(self.norm(h + x)).squeeze(-1).mean(-1)


def tiny_bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)
    return transformers.BertForMaskedLM(config)


@dataclass
class Case:
    name: str
    make: Callable[[], nn.Module]
    optimizer: Callable[[Any], torch.optim.Optimizer]
    amp: bool = False
    hf: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("index_buffer", IndexBuffer, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    Case("batchnorm_dropout", BatchNormNet, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    Case("multihead_attention", Attention, lambda p: torch.optim.Adam(p, lr=1e-2)),
    Case("hf_bert", tiny_bert, lambda p: torch.optim.Adam(p, lr=1e-3), hf=True),
    Case("gradscaler_autocast", BatchNormNet, lambda p: torch.optim.SGD(p, lr=0.05), amp=True),
]


def _batch(step: int, hf: bool) -> dict[str, torch.Tensor] | torch.Tensor:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(4, 6, 8 if not hf else 16, generator=g)
    if step == BAD_STEP:
        x[2, 1, 0] = float("nan")  # sample 2 goes non-finite at this step
    if hf:
        return {"inputs_embeds": x, "labels": torch.randint(0, 32, (4, 6), generator=g)}
    return x


def _loss(out: Any, hf: bool) -> torch.Tensor:
    return out.loss if hf else (out ** 2).mean()


def _train(case: Case, watch: Callable[[nn.Module], Any] | None) -> dict[str, Any]:
    """The user's loop: a NaN batch at BAD_STEP; backward always runs, the optimizer step is skipped when the
    loss is not finite (as many loops do)."""
    torch.manual_seed(0)
    model = case.make()
    model.train()
    opt = case.optimizer(model.parameters())
    scaler = torch.amp.GradScaler("cpu") if case.amp else None
    losses: list[float] = []
    ctx = watch(model) if watch is not None else None
    mon = ctx.__enter__() if ctx is not None else None
    try:
        for step in range(STEPS):
            batch = _batch(step, case.hf)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case.amp):
                out = model(**batch) if isinstance(batch, dict) else model(batch)
                loss = _loss(out, case.hf)
            losses.append(float(loss))
            if scaler is not None:
                scaler.scale(loss).backward()  # the user's own backward, after nanprobe's diagnosis
                scaler.step(opt)  # skips the step itself on non-finite gradients
                scaler.update()
            else:
                loss.backward()
                if math.isfinite(losses[-1]):
                    opt.step()
            opt.zero_grad()
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
    return {"losses": losses, "state": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(opt.state_dict()),
            "rng": torch.get_rng_state(), "scaler": scaler.state_dict() if scaler else None, "monitor": mon}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and bool(
            torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                  and torch.equal(a.nan_to_num(), b.nan_to_num())))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b)


def _assert_unharmed(bare: dict[str, Any], watched: dict[str, Any]) -> None:
    assert math.isnan(bare["losses"][BAD_STEP]) and all(math.isfinite(v) for i, v in enumerate(bare["losses"])
                                                        if i != BAD_STEP)
    assert _same(bare["losses"], watched["losses"]), (bare["losses"], watched["losses"])
    for key in ("state", "opt", "rng", "scaler"):
        assert _same(bare[key], watched[key]), key


@pytest.mark.parametrize("policy", ["dump", "warn"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_monitored_run_ends_bitwise_as_the_bare_run(case: Case, policy: str, tmp_path: Path) -> None:
    bare = _train(case, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watched = _train(case, lambda m: monitor(m, out_dir=tmp_path, on_nonfinite=policy, run_name=case.name))
    _assert_unharmed(bare, watched)
    mon = watched["monitor"]
    (bundle,) = mon.bundles
    assert bundle.name == f"{case.name}-step{BAD_STEP}"
    report = load_bundle(bundle).report
    assert report.monitor.incomplete is None and report.first_nonfinite.samples == [2]
    ours = [w for w in caught if issubclass(w.category, NonFiniteWarning)]
    assert len(ours) == (1 if policy == "warn" else 0)


def _broken_diagnosis(error: BaseException) -> Callable[..., Any]:
    def diagnose(*args: Any, **kwargs: Any) -> Any:
        raise error
    return diagnose


def _failing_writer(d: Path, c: object) -> None:
    raise OSError(28, "No space left on device")


INTERNAL = {
    "diagnosis_raises": (lambda mp: mp.setattr(failure_mod, "diagnose", _broken_diagnosis(RuntimeError("bug"))),
                         "the diagnosis raised RuntimeError: bug"),
    "out_of_memory": (lambda mp: mp.setattr(failure_mod, "diagnose", _broken_diagnosis(
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))),
        "the diagnosis raised OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
    "bundle_write_fails": (lambda mp: mp.setattr(bundle_mod, "WRITERS", [
        (n, _failing_writer if n == "report.html" else w) for n, w in bundle_mod.WRITERS]),
        "writing the bundle failed: OSError: [Errno 28] No space left on device"),
}


@pytest.mark.parametrize("policy", ["dump", "warn"])
@pytest.mark.parametrize("what", list(INTERNAL))
def test_nanprobes_own_failure_leaves_an_incomplete_bundle_and_the_run_goes_on(
        what: str, policy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[0]
    bare = _train(case, None)
    inject, reason = INTERNAL[what]
    inject(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watched = _train(case, lambda m: monitor(m, out_dir=tmp_path, on_nonfinite=policy, run_name="r"))
    _assert_unharmed(bare, watched)
    (bundle,) = watched["monitor"].bundles
    report = load_bundle(bundle).report
    assert report.monitor.incomplete == reason
    assert report.first_nonfinite.module == "<output>" or what == "bundle_write_fails"
    ours = [str(w.message) for w in caught if issubclass(w.category, NonFiniteWarning)]
    assert len(ours) == 1 and "could not finish handling" in ours[0] and "bundle incomplete" in ours[0]


def test_in_raise_mode_nanprobes_own_failure_is_its_own_error_with_the_cause_chained(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failure_mod, "diagnose", _broken_diagnosis(RuntimeError("bug")))
    model = IndexBuffer()
    with pytest.raises(NonFiniteError) as info, monitor(model, out_dir=tmp_path):
        model(_batch(BAD_STEP, False))
    assert isinstance(info.value.__cause__, RuntimeError) and str(info.value.__cause__) == "bug"
    assert "bundle incomplete: the diagnosis raised RuntimeError: bug" in str(info.value)


def test_an_interrupt_during_the_diagnosis_is_reraised_after_the_bundle_and_cleanup(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nanprobe.testing import iter_hook_dicts

    monkeypatch.setattr(failure_mod, "diagnose", _broken_diagnosis(KeyboardInterrupt()))
    model = IndexBuffer()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(KeyboardInterrupt), monitor(model, out_dir=tmp_path, on_nonfinite="dump"):
        model(_batch(BAD_STEP, False))
    (bundle,) = list(tmp_path.iterdir())
    assert load_bundle(bundle).report.monitor.incomplete == "interrupted (KeyboardInterrupt) during the diagnosis"
    assert _same(state, model.state_dict())
    assert all(not hooks for _, hooks in iter_hook_dicts([model]))


class LogNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.log(x.abs().sum(-1, keepdim=True)) * x)


def test_the_time_budget_defers_the_rest_of_the_diagnosis_and_the_bundle_says_so(tmp_path: Path) -> None:
    model = LogNorm().eval()
    x = torch.randn(8, 6, 8)
    x[5, 2] = 0.0  # log(0) for sample 5
    with monitor(model, out_dir=tmp_path, on_nonfinite="dump", time_budget=0.0) as mon, torch.no_grad():
        model(x)
    report = load_bundle(mon.bundles[0]).report
    assert report.deferred is not None and "nanprobe replay" in report.deferred
    assert report.first_nonfinite.samples == [5]  # localization always runs
    assert report.forward_passes < 8 and any("deferred (time budget)" in e for e in report.verdict.evidence)
    with monitor(model, out_dir=tmp_path / "full", on_nonfinite="dump", time_budget=None) as mon, torch.no_grad():
        model(x)
    assert load_bundle(mon.bundles[0]).report.deferred is None


@contextlib.contextmanager
def _recording_guard(model: nn.Module) -> Iterator[NanGuard]:
    """The pytest guard, disarmed so that it records and localizes but raises nothing: the loop goes on (its
    end-of-test re-raise is left out; the test reads the failures it recorded)."""
    guard = NanGuard()
    guard.watch(model, "model")
    guard.armed = False
    try:
        yield guard
    finally:
        guard.remove()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_pytest_guard_localizes_and_leaves_the_run_bitwise_as_the_bare_run(case: Case) -> None:
    bare = _train(case, None)
    watched = _train(case, _recording_guard)
    _assert_unharmed(bare, watched)
    guard = watched["monitor"]
    forward = [f for f in guard.failures if f.phase == "forward"]
    assert forward and forward[0].call_index == BAD_STEP, guard.failures
    origin = forward[0].first_nonfinite
    assert origin is not None and origin.module == "<input>" and origin.samples == [2], origin
