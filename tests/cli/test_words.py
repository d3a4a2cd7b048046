"""The words of the reports: buffers are buffers and belong in the headline whatever the status, a clean trace
has no "layers around it", the root module is ``<root>`` in every text output, and replay says what a folder
or a pickled bundle is."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from nanprobe.errors import NonFiniteError
from nanprobe.monitoring import monitor
from nanprobe.postmortem.html import render_html
from nanprobe.postmortem.markdown import render_markdown
from nanprobe.render import render_diagnosis
from nanprobe.testing import NanGuard
from nanprobe.testing.bundle import write_failure_bundle
from tests.cli import models
from tests.cli.helpers import Result, one_error_line, run_cli
from tests.monitoring.models import FACTORY_LOGNET, bad_batch, make_lognet

BN_FACTORY = "tests.cli.models:make_batchnorm"


def _flat(text: str) -> str:
    """Rendered text without box drawing and line breaks: what a person reads."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _text(renderable: Any, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, emoji=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.fixture
def bn_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    model = models.make_batchnorm()
    with torch.no_grad():
        model[1].running_var[3] = float("nan")
    checkpoint, batches = tmp_path / "bn.pt", tmp_path / "bn_batches.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    torch.save([torch.randn(6, models.DIM, generator=torch.Generator().manual_seed(0))], batches)
    return checkpoint, batches


def _bn_trace(bn_checkpoint: tuple[Path, Path], *flags: str) -> Result:
    checkpoint, batches = bn_checkpoint
    return run_cli("trace", checkpoint, "--model", BN_FACTORY, "--batches", batches, "--no-color", *flags)


# -- a non-finite buffer is a buffer, and it is in the headline ----------------------------------------------

def test_clean_train_trace_headlines_the_nan_buffer(bn_checkpoint: tuple[Path, Path]) -> None:
    result = _bn_trace(bn_checkpoint, "--mode", "train", "--backward")
    assert result.code == 0, result.err
    panel = result.out[: result.out.index("╯")]  # the first box: the headline
    assert ("CLEAN — but 1.running_var (a buffer) holds NaN: eval-mode forwards through it will be NaN"
            in _flat(panel))
    assert "Layers around it" not in result.out and "parameter" not in result.out


def test_nonfinite_trace_calls_the_buffer_a_buffer_in_the_headline(bn_checkpoint: tuple[Path, Path]) -> None:
    result = _bn_trace(bn_checkpoint)
    assert result.code == 1, result.err
    panel = _flat(result.out[: result.out.index("╯")])
    assert panel.startswith("nanprobe verdict NON-FINITE cause: nonfinite_parameter 1.running_var (a buffer) "
                            "holds NaN"), panel


def test_scan_says_buffer_and_what_it_breaks(bn_checkpoint: tuple[Path, Path]) -> None:
    result = run_cli("scan", bn_checkpoint[0], "--no-color")
    assert result.code == 1, result.err
    text = _flat(result.out)
    assert "poisoned" not in text
    assert "1/8 NaN: a buffer: every eval-mode forward through this BatchNorm is non-finite" in text
    row = next(line for line in result.out.splitlines() if "1.running_var" in line)
    assert "buffer" in row


def test_parameter_and_buffer_notes_without_the_model() -> None:
    report = {"status": "clean", "nonfinite_parameters": ["bn.running_mean", "fc.weight"], "forward_passes": 2}
    text = _flat(_text(render_diagnosis(report)))
    assert ("CLEAN — but bn.running_mean (a buffer) holds NaN/Inf; fc.weight holds NaN/Inf: this run did not "
            "carry them to an output; a forward that reads them will be non-finite") in text


# -- a clean trace has no "layers around it" -----------------------------------------------------------------

def test_clean_report_has_no_layers_section() -> None:
    layers = [{"index": i, "module": f"l{i}", "module_type": "Linear", "absmax": 1.0} for i in range(64)]
    text = _text(render_diagnosis({"status": "clean", "layers": layers, "forward_passes": 1}))
    assert "Layers around it" not in text and "l63" not in text


# -- the root module is <root> --------------------------------------------------------------------------------

ROOT_REPORT: dict[str, Any] = {
    "status": "nonfinite", "run": "r", "step": 3,
    "first_nonfinite": {"module": "", "module_type": "Net", "phase": "forward", "kind": "nan", "samples": [0]},
    "latent": [{"module": "", "kind": "inf"}],
    "verdict": {"cause": "unknown", "summary": "s", "root": {"module": "", "evidence": "e"}},
    "layers": [{"index": 0, "module": "", "module_type": "Net", "nan": 1, "role": "origin", "absmax": 1.0}],
}


def test_root_module_is_shown_as_root_in_every_text_output() -> None:
    terminal = _text(render_diagnosis(ROOT_REPORT))
    origin = next(line for line in terminal.splitlines() if line.startswith("module "))
    assert origin.split() == ["module", "<root>"]
    assert "<root> (inf)" in terminal  # latent
    assert "<model>" not in terminal and "''" not in terminal
    markdown = render_markdown(ROOT_REPORT, ROOT_REPORT["layers"])
    assert "first produced by `<root>` (Net, forward)" in markdown
    assert "| module | <root> |" in markdown and "| 0 | <root> | Net |" in markdown
    page = render_html(ROOT_REPORT, ROOT_REPORT["layers"], {})
    assert "<tr><th>module</th><td>&lt;root&gt;</td></tr>" in page


def test_replay_names_the_root_origin(tmp_path: Path) -> None:
    model = make_lognet()  # the root's own torch.log is where it starts
    with pytest.raises(NonFiniteError), monitor(model, out_dir=tmp_path, run_name="root", factory=FACTORY_LOGNET,
                                                config={"dim": 4}):
        model(bad_batch(rows=(0,)))
    result = run_cli("replay", tmp_path / "root-step0", "--no-color")
    assert result.code == 1, result.err
    assert "replay: origin '<root>' (the same origin as recorded)" in result.out
    assert "''" not in result.out


# -- replay: what a folder or a pickled bundle is -------------------------------------------------------------

def test_replay_of_a_plain_folder_says_it_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    result = run_cli("replay", tmp_path)
    assert result.code == 2
    line = one_error_line(result)
    assert "is not a bundle" in line and "COMPLETE" not in line.split("is not a bundle")[0]


def test_replay_of_a_pickled_monitor_bundle_needs_trust(tmp_path: Path) -> None:
    model = models.make_broken()
    with pytest.raises(NonFiniteError), monitor(model, out_dir=tmp_path, run_name="pkl"):  # no factory
        model(models.make_batches()[0])
    result = run_cli("replay", tmp_path / "pkl-step0")
    assert result.code == 2
    line = one_error_line(result)
    assert "holds a pickled model (saved without a factory)" in line and "--trust-pickle" in line
    assert "monitor" not in line


def test_replay_of_a_pytest_guard_bundle_needs_trust(tmp_path: Path) -> None:
    model = models.make_broken().eval()
    with pytest.raises(NonFiniteError), NanGuard() as guard:
        guard.watch(model)
        model(models.make_batches()[0])
    bundle = write_failure_bundle(guard.failures[0], tmp_path, "test_x", test_id="test_m.py::test_x")
    result = run_cli("replay", bundle)
    assert result.code == 2
    line = one_error_line(result)
    assert "holds a pickled model (saved without a factory)" in line and "--trust-pickle" in line
    assert "no factory was given to the monitor" not in line
