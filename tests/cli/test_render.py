"""render_diagnosis / render_scan on hand-made contract dicts, rendered to text at width 100."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from nanprobe.render import LAYER_WINDOW, render_diagnosis


def _text(renderable: Any, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, emoji=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def _layers(n: int, origin: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        role = "origin" if i == origin else ("propagated" if i > origin else None)
        bad = i >= origin
        rows.append({"index": i, "module": f"blocks.{i}", "module_type": "Linear", "phase": "forward",
                     "min": "nan" if bad else -1.5 * (i + 1), "max": "nan" if bad else 2.25, "absmax": 3.0,
                     "mean": 0.1, "std": 1.0, "nan": 4 if bad else 0, "inf": 0, "role": role})
    return rows


REPORT: dict[str, Any] = {
    "nanprobe_version": "0.1.0",
    "status": "nonfinite",
    "first_nonfinite": {"module": "encoder.attn", "module_type": "MultiheadAttention", "phase": "forward",
                        "kind": "nan", "batch_index": 0, "samples": [2, 5],
                        "op": "aten._native_multi_head_attention", "source": "model.py:42"},
    "nonfinite_parameters": [],
    "latent": [{"module": "encoder.mask", "kind": "inf", "op": "aten.masked_fill_"}],
    "verdict": {"cause": "fully_masked_attention",
                "summary": "samples 2 and 5 have no unmasked key, so softmax runs over nothing.",
                "evidence": ["train mode -> finite", "fast path off -> finite"],
                "fix": "keep at least one key unmasked per query (e.g. never mask the CLS token)."},
    "replay": [{"variant": "train mode", "changes": {"mode": "train"}, "nonfinite": False, "samples": []},
               {"variant": "float64", "changes": {"dtype": "float64"}, "nonfinite": True, "samples": [2, 5]}],
    "forward_passes": 9,
    "config_audit": [{"key": "model.dropout", "config_value": 0.1, "model_value": 0.0, "modules": ["encoder"],
                      "reached": True, "message": "config says 0.1, the model uses 0.0"}],
    "sample_details": [{"sample": 2, "notes": ["all 7 keys masked"]}, {"sample": 5, "notes": ["empty history"]}],
    "layers": _layers(12, origin=6),
    "instrumentation": {"hooks_changed_result": True, "method": "dispatch_mode"},
    "repro": "repro/repro_encoder_attn.py",
}


def test_nonfinite_report_sections_in_order() -> None:
    text = _text(render_diagnosis(REPORT))
    order = ["NON-FINITE", "fully_masked_attention", "samples 2 and 5 have no unmasked key", "train mode -> finite",
             "Where it starts", "encoder.attn", "Layers around it", "Replays", "Failing samples",
             "Config audit", "standalone repro", "fix"]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions), list(zip(order, positions))
    assert "aten._native_multi_head_attention" in text and "model.py:42" in text and "[2, 5]" in text
    assert "all 7 keys masked" in text and "model.dropout" in text
    assert "encoder.mask (inf, aten.masked_fill_)" in text
    assert "per-module hooks changed the result; localized with dispatch_mode" in text
    assert "keep at least one key unmasked" in text


def test_layers_window_around_origin() -> None:
    text = _text(render_diagnosis(REPORT))
    shown = [i for i in range(12) if f"blocks.{i} " in text]
    assert shown == list(range(6 - LAYER_WINDOW, 6 + LAYER_WINDOW + 1))
    assert "<- origin" in text
    origin_line = next(line for line in text.splitlines() if "<- origin" in line)
    assert "blocks.6" in origin_line and "nan" in origin_line
    assert "(3 more layer(s) not shown; see the JSON report)" in text
    assert "-4.5" in text  # layer 2's min, formatted


def test_replay_table_rows() -> None:
    text = _text(render_diagnosis(REPORT))
    train = next(line for line in text.splitlines() if line.startswith("train mode"))
    f64 = next(line for line in text.splitlines() if line.startswith("float64"))
    assert [c.strip() for c in train.split("│")] == ["train mode", "mode=train", "no", "-"]
    assert [c.strip() for c in f64.split("│")] == ["float64", "dtype=float64", "yes", "[2, 5]"]


def test_clean_report_is_short() -> None:
    clean = {"nanprobe_version": "0.1.0", "status": "clean", "first_nonfinite": None, "nonfinite_parameters": [],
             "latent": [], "verdict": None, "replay": [], "forward_passes": 1}
    text = _text(render_diagnosis(clean))
    assert "CLEAN" in text and "(1 forward pass)" in text
    for absent in ("Where it starts", "Replays", "fix", "NON-FINITE"):
        assert absent not in text


def test_accepts_an_object_with_to_dict_and_minimal_dicts() -> None:
    class Fake:
        def to_dict(self) -> dict[str, Any]:
            return {"status": "nonfinite", "first_nonfinite": {"module": "fc", "samples": []},
                    "verdict": None, "nonfinite_parameters": ["fc.weight"]}

    text = _text(render_diagnosis(Fake()))
    assert "cause: unknown" in text and "fc.weight holds NaN/Inf" in text and "module   fc" in text


def test_golden_header_at_width_100() -> None:
    lines = _text(render_diagnosis(REPORT)).splitlines()
    assert lines[0].startswith("╭─ nanprobe verdict ") and len(lines[0]) == 100
    assert lines[1] == "│ NON-FINITE  cause: fully_masked_attention" + " " * 56 + "│"


def test_failing_samples_show_extra_facts_and_hide_when_empty() -> None:
    report = {**REPORT, "sample_details": [{"sample": 2, "notes": [], "masked_positions": [0, 1]}]}
    assert "masked_positions=[0, 1]" in _text(render_diagnosis(report))
    empty = {**REPORT, "sample_details": [{"sample": 2, "notes": []}]}
    assert "Failing samples" not in _text(render_diagnosis(empty))


def test_config_audit_puts_values_that_never_reached_the_model_first() -> None:
    audit = [
        {"key": "model.sasrec_dropout", "config_value": 0.0, "model_value": 0.1, "reached": False,
         "modules": ["sasrec.blocks.0.attn"], "message": "config 0.0, model 0.1: never reached the model"},
        {"key": "model.sasrec_num_heads", "config_value": 2, "model_value": 2, "reached": True, "message": "ok"},
        {"key": "train.seed", "config_value": 42, "model_value": None, "reached": None, "message": "not checked"},
    ]
    text = _text(render_diagnosis({**REPORT, "config_audit": audit}))
    section = text[text.index("Config audit"):]
    assert "model.sasrec_dropout" in section and "never reached the model" in section
    assert "1 value(s) did not reach the model; 1 did (model.sasrec_num_heads)" in section
    assert "1 key(s) not checked" in section and "train.seed" not in section
