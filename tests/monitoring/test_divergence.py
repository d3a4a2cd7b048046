"""Training runs: a diverging run gets a training_divergence verdict with the onset step and the learning
rate, the early warning fires well before the first non-finite value, a healthy run gets no warning, and a
bundle whose failure does not reproduce from its batch replays as NOT REPRODUCED (exit 1)."""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from nanprobe.cli.main import main
from nanprobe.errors import GrowthError
from nanprobe.monitoring.monitor import GrowthWarning
from nanprobe.monitoring.warning import GrowthWatch
from nanprobe.postmortem.bundle import load_bundle
from tests.monitoring.loops import train_under_monitor

FACTORY = "tests.monitoring.test_divergence:make_net"


def make_net() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def _train(lr: float, tmp_path: Path, steps: int = 80, **kwargs: object) -> tuple[object, list[float]]:
    torch.manual_seed(0)
    model = make_net()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return train_under_monitor(tmp_path, model, opt, torch.randn(32, 8), torch.randn(32, 1), steps,
                               factory=FACTORY, run_name="fit", **kwargs)


def test_a_diverging_run_is_training_divergence_with_its_onset_and_learning_rate(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mon, losses = _train(0.9, tmp_path)
    failing = len(losses) - 1
    assert not math.isfinite(losses[-1]) and failing > 10
    (bundle,) = mon.bundles  # type: ignore[attr-defined]
    report = load_bundle(bundle).report
    assert report.monitor.phase == "loss" and report.monitor.reproduced is False
    verdict = report.verdict
    assert verdict is not None and verdict.cause == "training_divergence", report.verdict
    assert verdict.root is not None and verdict.root.step is not None and verdict.root.step <= 3
    assert "the learning rate in effect was 0.9" in verdict.fix and "clip gradients at about" in verdict.fix
    assert any("grew" in e and "per step from step" in e for e in verdict.evidence)
    keys = set().union(*(row.keys() for row in report.history))
    assert {"loss", "grad_norm", "lr", "output_absmax", "update_ratio"} <= keys
    early = [w for w in caught if issubclass(w.category, GrowthWarning)]
    assert early, "no early warning"
    assert mon.warnings[0].step <= failing - 5  # type: ignore[attr-defined]
    assert "per step from step" in str(early[0].message) and "at about step" in str(early[0].message)


def test_a_healthy_run_gets_no_warning_and_no_bundle(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", GrowthWarning)
        mon, losses = _train(0.05, tmp_path, steps=200)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert mon.warnings == [] and mon.bundles == []  # type: ignore[attr-defined]


def test_on_warning_raise_stops_before_the_first_nonfinite_value(tmp_path: Path) -> None:
    with pytest.raises(GrowthError, match="early warning at step"):
        _train(0.9, tmp_path, on_warning="raise")
    assert list(tmp_path.iterdir()) == []


def test_on_warning_dump_writes_an_early_bundle(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon, _ = _train(0.9, tmp_path, on_warning="dump")
    early = [load_bundle(p).report for p in tmp_path.iterdir() if p.name.endswith("-warning")]
    assert early, list(tmp_path.iterdir())
    report = min(early, key=lambda r: r.warning.step if r.warning is not None else math.inf)
    assert report.status == "clean" and report.warning is not None and report.warning.projected_step is not None
    assert report.warning.step == mon.warnings[0].step  # type: ignore[attr-defined]


def test_replay_of_a_bundle_that_does_not_reproduce_says_so_and_exits_1(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon, losses = _train(0.9, tmp_path / "b")
    (bundle,) = mon.bundles  # type: ignore[attr-defined]
    out, err, js = io.StringIO(), io.StringIO(), tmp_path / "replay.json"
    code = main(["replay", str(bundle), "--json", str(js), "--no-color"], stdout=out, stderr=err)
    text = " ".join(out.getvalue().split())
    assert code == 1, err.getvalue()
    assert f"NOT REPRODUCED: the recorded inf at step {len(losses) - 1} came from the loss, which is computed " \
           "outside the model" in text
    assert "the history explains it" in text and "CLEAN" not in text
    data = json.loads(js.read_text())
    assert data["reproduced"] is False and data["status"] == "nonfinite"
    assert data["verdict"]["cause"] == "training_divergence"


def test_the_html_report_plots_the_history_on_log_scales_with_the_onset_marked(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from nanprobe.postmortem.html import history_figure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon, losses = _train(0.9, tmp_path)
    (bundle,) = mon.bundles  # type: ignore[attr-defined]
    report = load_bundle(bundle).report
    page = (bundle / "report.html").read_text()
    assert "<h2>Training history</h2>" in page and "data:image/png;base64," in page.split("Training history")[1]
    onset = report.verdict.root.step
    fig = history_figure(report.history, report.step, onset=onset, warned=mon.warnings[0].step)  # type: ignore[attr-defined]
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert {"loss", "gradient norm", "output |max|", "update / weight", "weights' norm", "clip ratio",
            "learning rate"} <= set(panels)
    assert panels["loss"].get_yscale() == "log" and panels["gradient norm"].get_yscale() == "log"
    marks = {line.get_label(): line.get_xdata()[0] for line in panels["loss"].get_lines()
             if line.get_label() in ("failing step", "divergence onset", "early warning")}
    assert marks == {"failing step": len(losses) - 1, "divergence onset": onset,
                     "early warning": mon.warnings[0].step}  # type: ignore[attr-defined]
    crosses = panels["loss"].collections  # the non-finite loss of the failing step
    assert crosses and list(crosses[0].get_offsets()[:, 0]) == [len(losses) - 1]


def test_a_loss_rising_at_the_float_floor_after_the_data_is_fitted_is_not_a_warning() -> None:
    """1.0 falls to 1e-12, then noise at the floor grows it to 1e-7 (5 decades): nothing the run had not seen.
    The same growth from a floor that then passes the run's earlier values warns."""

    def feed(values: list[float]) -> list[str]:
        watch = GrowthWatch()
        return [w.signal for step, v in enumerate(values) for w in watch.update(step, {"loss": v}, torch.float32)]

    falling = [10 ** (-12 * step / 100) for step in range(100)]  # 1.0 down to about 1e-12
    rising = [10 ** (-12 + 0.15 * step) for step in range(1, 40)]  # 1e-12 up to 4e-7
    assert feed(falling + rising) == []
    assert feed(falling + rising + [10 ** (-6 + 0.25 * step) for step in range(1, 40)]) == ["loss"]


def test_the_update_ratio_read_back_a_step_late_still_reaches_the_early_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The update ratio is queued on the device at the optimizer step and read back with the next step's
    values: the early warning must still see it, dated to the step it belongs to."""
    seen: dict[int, float] = {}
    update = GrowthWatch.update

    def spy(self: GrowthWatch, step: int, values: dict[str, float], dtype: torch.dtype | None = None,
            loss_dtype: torch.dtype | None = None) -> list:
        if "update_ratio" in values:
            seen[step] = values["update_ratio"]
        return update(self, step, values, dtype, loss_dtype)

    monkeypatch.setattr(GrowthWatch, "update", spy)
    mon, losses = _train(0.05, tmp_path, steps=20)
    rows = mon.history.tail()  # type: ignore[attr-defined]
    logged = {row["step"]: row["update_ratio"] for row in rows if "update_ratio" in row}
    assert len(losses) == 20 and len(logged) >= 19
    assert set(seen) >= set(range(19)) and all(seen[s] == logged[s] for s in seen), (sorted(seen), sorted(logged))


def test_outputs_growing_while_the_loss_falls_are_fitting_not_diverging() -> None:
    """Outputs growing 4 decades towards large targets while the loss falls do not warn; the same outputs with
    a rising loss do."""

    def feed(losses: list[float], dtype: torch.dtype = torch.float32) -> list[str]:
        watch = GrowthWatch()
        found = []
        for step, loss in enumerate(losses):
            absmax = 0.5 if step < 20 else 0.5 * 10 ** (0.2 * (step - 19))  # 0.5 to 5e3 in 20 steps
            found += [w.signal for w in watch.update(step, {"loss": loss, "output_absmax": absmax}, dtype)]
        return found

    falling = [1e8 * (1 - 0.001 * step) for step in range(40)]
    assert feed(falling) == []
    assert feed([1.0] * 20 + [1.5 ** k for k in range(1, 21)]) == ["output_absmax", "loss"]
    assert feed(falling, torch.float16) == ["output_absmax"]  # in float16, 5e3 is near the max all the same


def test_a_failure_bundle_keeps_the_warnings_given_before_it(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mon, losses = _train(0.9, tmp_path)
    (bundle,) = mon.bundles  # type: ignore[attr-defined]
    loaded = load_bundle(bundle)
    earlier = loaded.report.earlier_warnings
    given = mon.warnings  # type: ignore[attr-defined]
    assert given and [(w.step, w.signal) for w in earlier] == [(w.step, w.signal) for w in given]
    assert all(w.step < len(losses) - 1 for w in earlier)
    markdown = (bundle / "report.md").read_text()
    assert "## Early warnings before the failure" in markdown and f"- step {given[0].step} (" in markdown
