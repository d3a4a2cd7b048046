"""The baseline script keeps working (it diagnoses and scores; what today's verdicts say is not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.zoo import baseline


def test_baseline_scores_a_broken_and_a_clean_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rows.json"
    assert baseline.main(["log_of_zero_feature", "causal_mask_latent_inf", "--json", str(out)]) == 0
    rows = {r["case"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"log_of_zero_feature", "causal_mask_latent_inf"}
    assert rows["log_of_zero_feature"]["expected"]["module"] == "feat"
    assert set(rows["log_of_zero_feature"]["right"]) == {"module", "cause", "samples", "phase"}
    printed = capsys.readouterr().out
    assert "| log_of_zero_feature |" in printed and "1 broken cases, 1 clean cases" in printed
