"""History rows' outlier record: read back only when complete, shown as one line (CLI and Markdown) instead of
four mostly empty table columns."""

from __future__ import annotations

from rich.console import Console

from nanprobe.cli.cmd_report import history_table
from nanprobe.report.history import OUTLIER_FIELDS, Outlier, outlier_lines, table_keys

ROWS = [{"step": 29, "loss": 0.8, "grad_norm": 0.69},
        {"step": 30, "loss": 9.2, "grad_norm": 1331.0, "outlier_input": "batch.args[0]", "outlier_row": 5.0,
         "outlier_absmax": 2803.0, "outlier_median": 1.76},
        {"step": 31, "loss": "inf"}]


def test_an_outlier_record_is_read_back_only_when_complete() -> None:
    found = Outlier.of(ROWS[1])
    assert found == Outlier("batch.args[0]", 5, 2803.0, 1.76)
    assert found.record() == {k: ROWS[1][k] for k in OUTLIER_FIELDS}
    assert Outlier.of(ROWS[0]) is None
    partial = {k: v for k, v in ROWS[1].items() if k != "outlier_median"}
    assert Outlier.of(partial) is None
    assert Outlier.of({**ROWS[1], "outlier_row": True}) is None  # a bool is not a row


def test_the_table_keeps_the_signals_and_the_outlier_becomes_one_line() -> None:
    assert table_keys(ROWS) == ["grad_norm", "loss"] and not set(OUTLIER_FIELDS) & set(table_keys(ROWS))
    assert outlier_lines(ROWS) == ["step 30's batch: row 5 of its input batch.args[0] has |max| 2.8e+03, "
                                   "1.59e+03 times the median row's 1.76"]
    console = Console(width=200, record=True, color_system=None)
    console.print(history_table(ROWS))
    text = console.export_text()
    assert "step 30's batch: row 5 of its input batch.args[0]" in text and "outlier_row" not in text
