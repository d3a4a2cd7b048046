"""10,000 monitored steps: every record stays bounded, RSS stays flat; and the 3-lines-added loop."""

from __future__ import annotations

import gc
import resource
from pathlib import Path

import pytest
import torch
from torch import nn

from nanprobe.errors import NonFiniteError
from nanprobe.monitoring import monitor

STEPS = 10_000


def rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.slow
def test_ten_thousand_steps_keep_memory_bounded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 8), torch.randn(4, 1)

    def run(n: int, mon) -> None:
        for _ in range(n):
            loss = nn.functional.mse_loss(model(x), y)
            mon.check_loss(loss).backward()
            mon.after_backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    with monitor(model, out_dir=tmp_path, history=200, mode="full", every=1000, optimizer=opt) as mon:
        run(500, mon)  # warm-up: allocator, caches
        gc.collect()
        before = rss_mib()
        run(STEPS - 500, mon)
        gc.collect()
        after = rss_mib()
        assert mon.calls == STEPS and mon.current_step == STEPS - 1
        assert len(mon.history) == 200 and mon.history.total == STEPS
        assert mon.history.tail()[-1]["step"] == STEPS - 1 and set(mon.history.tail()[-1]) == {
            "step", "loss", "grad_norm", "lr", "output_absmax"}
        assert "update_ratio" in mon.history.tail()[-2]  # read back with the next step's values
        assert len(mon.param_history) == 64  # per-parameter gradient norms: bounded too
        assert len(mon.layer_history) == 8 and mon.layer_history[-1]["step"] == 9000  # maxlen of snapshots
        assert mon.failures == [] and mon._pending == []
        assert mon._watcher._stack() == []
    print(f"\nRSS over {STEPS - 500} monitored steps: {before:.1f} MiB -> {after:.1f} MiB ({after - before:+.1f})")
    assert after - before < 30, f"RSS grew by {after - before:.1f} MiB"
    assert list(tmp_path.iterdir()) == []


def test_three_added_lines_fit_an_unchanged_training_loop(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = [(torch.randn(5, 4), torch.randn(5, 1)) for _ in range(6)]
    data[4][0][3, 1] = float("nan")  # a corrupted sample in the 5th batch

    trained: list[int] = []
    with pytest.raises(NonFiniteError) as info:  # noqa: SIM117 - the loop below is the user's, as written
        with monitor(model, out_dir=tmp_path, run_name="ex") as mon:       # added line 1
            for i, (x, y) in enumerate(data):
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                mon.check_loss(loss).backward()                               # added line 2 (was loss.backward())
                mon.after_backward()                                          # added line 3
                opt.step()
                trained.append(i)
    assert trained == [0, 1, 2, 3]
    report = mon.failures[0].report
    assert report["step"] == 4 and report["first_nonfinite"]["module"] == "<input>"
    assert report["first_nonfinite"]["samples"] == [3] and report["verdict"]["cause"] == "nonfinite_input"
    assert (tmp_path / "ex-step4" / "COMPLETE").is_file() and "ex-step4" in str(info.value)
    assert [r["step"] for r in report["history"]] == [0, 1, 2, 3]
