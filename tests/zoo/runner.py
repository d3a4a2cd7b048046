"""Run a zoo case once, exactly as the case says (mode, grad, backward), and report what went non-finite."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nanprobe.batches import batch_size, call_model, select_samples
from nanprobe.execution import backward_target
from tests.zoo.cases import Case


@dataclass
class Outcome:
    """What one run showed: the output's non-finite kinds and rows, and the parameters whose gradient is not
    finite (with ``backward``)."""

    output_kinds: set[str] = field(default_factory=set)
    output_rows: list[int] = field(default_factory=list)
    bad_grads: list[str] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def forward_nonfinite(self) -> bool:
        return bool(self.output_kinds)

    @property
    def nonfinite(self) -> bool:
        return self.forward_nonfinite or bool(self.bad_grads)


def _leaves(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for v in obj for t in _leaves(v)]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _leaves(v)]
    return []


def run_batch(case: Case, model: nn.Module, batch: Any) -> Outcome:
    outcome = Outcome()
    size = batch_size(batch)
    model.zero_grad(set_to_none=True)
    model.train(case.mode == "train")
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), \
                torch.set_grad_enabled(case.mode == "train" or case.backward):
            torch.manual_seed(case.seed)
            warnings.simplefilter("ignore")
            output = call_model(model, batch)
            for t in _leaves(output):
                if not (t.is_floating_point() or t.is_complex()):
                    continue
                bad = ~torch.isfinite(t.detach())
                if bool(torch.isnan(t).any()):
                    outcome.output_kinds.add("nan")
                if bool(torch.isinf(t).any()):
                    outcome.output_kinds.add("inf")
                if size is not None and t.dim() >= 1 and t.shape[0] == size:
                    rows = bad.reshape(size, -1).any(dim=1).nonzero().flatten().tolist()
                    outcome.output_rows = sorted(set(outcome.output_rows) | set(rows))
            if case.backward:
                target = backward_target(output)
                if target is not None and target.requires_grad:
                    target.backward()
                outcome.bad_grads = [name for name, p in model.named_parameters()
                                     if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    except Exception as e:  # a case that makes the model raise is a broken case
        outcome.error = e
    model.zero_grad(set_to_none=True)
    return outcome


def build(case: Case) -> tuple[nn.Module, list[Any]]:
    """The case's model and batches, without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        return case.build()


def run_case(case: Case) -> tuple[list[Outcome], nn.Module, list[Any]]:
    """Build the case and run each of its batches once."""
    model, batches = build(case)
    return [run_batch(case, model, b) for b in batches], model, batches


def run_rows(case: Case, model: nn.Module, batch: Any, rows: list[int]) -> Outcome:
    """The case's model on only ``rows`` of ``batch``."""
    return run_batch(case, model, select_samples(batch, rows))
