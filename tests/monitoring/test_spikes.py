"""The monitor's spike watch: which step's batch jumped, and which row of it stands out (inputs as a tuple, as
keyword arguments, sequence-first), measured on constructed batches."""

from __future__ import annotations

import torch

from nanprobe.batches import ModelCall
from nanprobe.monitoring.spikes import OUTLIER, Jump, SpikeWatch, gradient_spike, outlier_row
from nanprobe.report.history import Outlier


def _rows(n: int = 16, width: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def test_the_row_far_above_the_others_is_found_with_its_input_and_sizes() -> None:
    x = _rows()
    x[11, 3] = 5e4
    found = outlier_row(ModelCall((x,), {}))
    assert found is not None and (found.path, found.row) == ("batch.args[0]", 11)
    assert found.absmax == 5e4 and found.median == float(x.abs().amax(1).median())


def test_among_keyword_inputs_the_one_with_the_outlier_is_named() -> None:
    embeds, pixels = _rows(seed=1), _rows(seed=2).reshape(16, 2, 4)
    pixels[7] *= 1e6
    ids = torch.randint(0, 10, (16, 8))  # integers are not inputs an outlier is looked for in
    found = outlier_row(ModelCall((), {"input_ids": ids, "embeds": embeds, "pixels": pixels}))
    assert found is not None and found.row == 7 and "pixels" in found.path and "embeds" not in found.path


def test_a_sequence_first_batch_is_read_along_its_batch_dimension() -> None:
    seq = torch.randn(5, 6, 4, generator=torch.Generator().manual_seed(3))  # (L, B, E)
    mask = torch.zeros(6, 5, dtype=torch.bool)  # (B, L): the layout says B = 6
    seq[:, 4] *= 1e5
    found = outlier_row(ModelCall((seq,), {"src_key_padding_mask": mask}))
    assert found is not None and found.row == 4


def test_nothing_stands_out_in_an_ordinary_batch_or_a_batch_of_two() -> None:
    x = _rows()
    x[2] *= OUTLIER / 10  # large, but not a hundred times the median row
    assert outlier_row(ModelCall((x,), {})) is None
    assert outlier_row(ModelCall((torch.tensor([[1.0], [1e9]]),), {})) is None
    assert outlier_row(ModelCall((torch.zeros(8, 3),), {})) is None


def test_the_watch_reports_a_jump_from_an_ordinary_value_once_per_signal_and_step() -> None:
    watch = SpikeWatch()
    seen = [watch.update(s, {"loss": v, "grad_norm": 1.0}) for s, v in enumerate([1.0, 0.9, 1.1, 0.8])]
    assert seen == [[]] * 4
    assert watch.update(4, {"loss": 2e3, "grad_norm": 1.0}) == [Jump(4, "loss", 0.8, 2e3)]
    # the same step read again after backward: the loss is not reported twice, the gradient norm's jump is new
    assert watch.update(4, {"loss": 2e3, "grad_norm": 5e3}) == [Jump(4, "grad_norm", 1.0, 5e3)]
    rising = SpikeWatch()
    assert [rising.update(s, {"loss": v}) for s, v in enumerate([1.0, 1.0, 1.0, 40.0, 5e4])] == [[]] * 5
    assert SpikeWatch().update(0, {"loss": 1e9}) == []


def test_a_gradient_jump_after_ordinary_steps_is_warned_with_its_row() -> None:
    jump = Jump(30, "grad_norm", 0.69, 1.3e3)
    row = Outlier("batch.args[0]", 5, 2.8e3, 1.76)
    warning = gradient_spike(jump, row, [0.005, 0.007, 0.007])
    assert warning is not None and (warning.step, warning.signal) == (30, "grad_spike")
    assert "from 0.69 to 1.3e+03 at once" in warning.message and "row 5 of its input batch.args[0]" in warning.message
    assert "up to 1.88e+03 times further" in warning.message
    assert gradient_spike(jump, None, [0.005, 0.9]) is None  # a large step came first: not this batch's doing
    assert gradient_spike(jump, None, []) is None  # no optimizer step measured yet
    assert gradient_spike(Jump(30, "loss", 0.8, 1e4), row, [0.005]) is None  # a loss alone moves no weights


def test_the_history_keeps_numbers_and_short_labels_and_drops_the_rest() -> None:
    from nanprobe.monitoring.history import LABEL, History

    history = History(4)
    history.log(0, {"loss": 1.5, "outlier_input": "batch.args[0]", "note": "x" * (LABEL + 50), "other": object()})
    (row,) = history.tail()
    assert row == {"step": 0, "loss": 1.5, "outlier_input": "batch.args[0]", "note": "x" * LABEL}
