"""torch.compile: nanprobe's handlers never run under Dynamo. Monitoring the original module while the compiled
one is called (its hooks are traced), the compiled wrapper itself, or a module compiled in place: each survives
a NaN step, writes a bundle for it under the model's own names (no ``_orig_mod.``), and the report says the
diagnosis ran eagerly."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from nanprobe import monitor
from nanprobe.monitoring.failure import EAGER_NOTE
from nanprobe.postmortem.bundle import load_bundle

BAD = 3


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    """Each test compiles from scratch (Dynamo stops recompiling a code object after a few variants)."""
    torch._dynamo.reset()


class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Log(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))


def _backend(name: str) -> str:
    if name == "inductor" and not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        pytest.skip("inductor on CPU needs a C++ compiler, and none is installed")
    return name


def _run(tmp_path: Path, backend: str, watched: str) -> tuple:
    model = _model()
    if watched == "in_place":
        model.compile(backend=backend)
        called = target = model
    else:
        called = torch.compile(model, backend=backend)
        target = model if watched == "original" else called
    seconds = []
    with monitor(target, tmp_path, on_nonfinite="dump") as mon:
        for step in range(5):
            x = torch.rand(4, 8, generator=torch.Generator().manual_seed(step)) + 0.5
            if step == BAD:
                x[2, 5] = -1.0  # log -> NaN in module "0", row 2
            start = time.perf_counter()
            try:
                called(x).pow(2).mean().backward()
            except Exception as e:  # the compiler itself, not nanprobe: say why and skip
                if "BackendCompilerFailed" in type(e).__name__ or "CppCompileError" in repr(e):
                    pytest.skip(f"the {backend} backend cannot compile here: {type(e).__name__}")
                raise
            seconds.append(time.perf_counter() - start)
    return mon, seconds


@pytest.mark.parametrize("watched", ["original", "compiled", "in_place"])
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_a_compiled_model_survives_a_nan_step_and_the_bundle_names_its_modules(
        tmp_path: Path, backend: str, watched: str) -> None:
    mon, seconds = _run(tmp_path, _backend(backend), watched)
    assert mon.current_step == 4 and len(seconds) == 5  # every step ran, the NaN step included
    (failure,) = mon.failures
    assert failure.step == BAD and failure.bundle.name == f"sequential-step{BAD}" and EAGER_NOTE in failure.message
    report = load_bundle(failure.bundle).report
    assert (report.first_nonfinite.module, report.first_nonfinite.samples) == ("0", [2])
    assert report.verdict.cause == "numerical_domain"
    assert report.instrumentation["compiled"] == EAGER_NOTE
    assert not any("_orig_mod" in str(name) for row in report.layers for name in [row.module])
    assert seconds[BAD] < 60, f"the NaN step took {seconds[BAD]:.1f} s"  # Dynamo never compiles nanprobe


def test_nanprobes_handlers_are_marked_for_dynamo_to_skip(tmp_path: Path) -> None:
    model = _model()
    with monitor(model, tmp_path) as mon:
        for handler in (mon._on_call, mon._handle, mon._on_warning, mon._watcher._entered, mon._watcher._finished):
            assert getattr(handler, "_torchdynamo_disable", False), handler
