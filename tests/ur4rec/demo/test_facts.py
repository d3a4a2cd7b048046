"""The demo's fact checks fail when the evidence is not there (they are not decoration)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ur4rec.data import DatasetNotFoundError
from ur4rec.demo import TraceOutcome, choose_data, trace_facts

BATCH = {"input_ids": torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4], [0, 7, 8, 9]])}
GOOD = {
    "status": "nonfinite",
    "first_nonfinite": {"module": "sasrec.blocks.0.attn", "module_type": "MultiheadAttention", "batch_index": 0,
                        "samples": [0, 2], "op": "aten._native_multi_head_attention"},
    "verdict": {"cause": "fully_masked_attention", "summary": "", "evidence": [], "fix": ""},
    "replay": [
        {"variant": "train mode", "changes": {"mode": "train"}, "nonfinite": False, "samples": []},
        {"variant": "dropout p=0", "changes": {"dropout_p": 0.0}, "nonfinite": True, "samples": [0, 2]},
        {"variant": "fast path off", "changes": {"mha_fastpath": False}, "nonfinite": False, "samples": []},
    ],
    "sample_details": [{"sample": 0, "masked_positions": [0, 1]}, {"sample": 2, "masked_positions": [0]}],
    "config_audit": [{"key": "model.sasrec_dropout", "config_value": 0.0, "model_value": 0.1, "reached": False,
                      "message": "sasrec_dropout: config 0.0, model 0.1"}],
}


def _facts(report: dict) -> dict[str, bool]:
    t = TraceOutcome(report=report, exit_code=1, seconds=0.0, json_path=Path("t.json"), text_path=Path("t.txt"),
                     argv=["trace", "ckpt.pt"], batch=BATCH)
    return {f.name: f.ok for f in trace_facts(t)}


def test_all_facts_hold_on_the_expected_report() -> None:
    facts = _facts(GOOD)
    assert len(facts) == 7 and all(facts.values()), facts


PADDING = "failing samples = queries that attend only to padding"
DROPOUT = "dropout p=0 changes nothing"


@pytest.mark.parametrize(("edit", "broken"), [
    (lambda r: r["verdict"].update(cause="dropout_dependent"),
     {"verdict", "config audit flags sasrec_dropout (a real but separate bug)"}),
    (lambda r: r["replay"][1].update(nonfinite=False, samples=[]), {DROPOUT}),
    (lambda r: r["replay"][0].update(nonfinite=True, samples=[0, 2]), {"train mode removes it"}),
    (lambda r: r["replay"].pop(2), {"fast path off removes it"}),
    (lambda r: r["first_nonfinite"].update(samples=[0]), {PADDING, DROPOUT}),
    (lambda r: r["sample_details"][0].update(masked_positions=[0]), {PADDING}),
    (lambda r: r["config_audit"].clear(), {"config audit flags sasrec_dropout (a real but separate bug)"}),
    (lambda r: r["first_nonfinite"].update(module="retriever.proj", module_type="Linear"), {"origin"}),
])
def test_each_fact_can_fail(edit, broken: set[str]) -> None:
    report = copy.deepcopy(GOOD)
    edit(report)
    assert {name for name, ok in _facts(report).items() if not ok} == broken


def test_data_choice_without_movielens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UR4REC_DATA_DIR", str(tmp_path))
    chosen = choose_data("auto", fetch=False)
    assert chosen.source == "synthetic" and "MovieLens-100k unavailable" in chosen.detail
    with pytest.raises(DatasetNotFoundError, match=r"python -m ur4rec\.data fetch"):
        choose_data("movielens", fetch=False)
    assert choose_data("synthetic").source == "synthetic"
