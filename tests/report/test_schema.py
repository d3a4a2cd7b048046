"""The shipped JSON Schema: generated from the report types, and every kind of report document matches it."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

import nanprobe
from nanprobe.cli.main import main
from nanprobe.monitoring import monitor
from nanprobe.postmortem.assemble import write_snapshot
from nanprobe.report import Report, Verdict
from nanprobe.report.schema import SCHEMA_PATH, build_schema, markdown_table
from nanprobe.report.validate import ReportSchemaError, validate_report
from nanprobe.testing.bundle import failure_snapshot
from nanprobe.testing.failures import GuardFailure, find_origin
from tests.monitoring.models import FACTORY_LOGNET, bad_batch, make_lognet

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_shipped_schema_is_generated_from_the_types() -> None:
    shipped = json.loads(SCHEMA_PATH.read_text())
    assert shipped == build_schema(), "regenerate it: python -m nanprobe.report.schema --write"
    assert set(shipped["required"]) == {"nanprobe_version", "status", "first_nonfinite", "nonfinite_parameters",
                                        "latent", "verdict", "replay"}
    causes = shipped["$defs"]["Verdict"]["properties"]["cause"]["enum"]
    assert "training_divergence" in causes and "fully_masked_attention" in causes and len(causes) == 10


def test_the_readme_report_reference_is_the_schema_table() -> None:
    text = README.read_text()
    block = re.search(r"<!-- report-schema:begin -->\n(.*?)<!-- report-schema:end -->", text, re.S)
    assert block is not None, "README.md lacks the report-schema block"
    assert block.group(1) == markdown_table(), "regenerate it: python -m nanprobe.report.schema --markdown"


def test_a_diagnosis_report_matches() -> None:
    model = make_lognet()
    d = nanprobe.diagnose(model, [bad_batch(rows=(1,))])
    data = d.to_json_dict()
    validate_report(data)
    assert data["status"] == "nonfinite" and data["first_nonfinite"]["samples"] == [1]
    assert json.loads(Report.from_dict(data).to_json()) == json.loads(d.to_json())  # round trip


def test_a_mismatch_is_named_with_its_path() -> None:
    data = nanprobe.diagnose(make_lognet(), [bad_batch()]).to_json_dict()
    data["verdict"]["cause"] = "bad_luck"
    with pytest.raises(ReportSchemaError, match="verdict/cause"):
        validate_report(data)
    data = Report().to_json_dict() | {"surprise": 1}
    with pytest.raises(ReportSchemaError, match="surprise"):
        validate_report(data)
    with pytest.raises(ReportSchemaError, match="root"):
        validate_report(Report(verdict=Verdict("unknown", "s")).to_json_dict() | {
            "verdict": {"cause": "unknown", "summary": "s", "evidence": [], "fix": "", "root": {"step": "x"}}})


def test_monitor_bundle_and_its_replay_match(tmp_path: Path) -> None:
    model = make_lognet()
    with monitor(model, out_dir=tmp_path / "b", on_nonfinite="dump", factory=FACTORY_LOGNET) as mon:
        model(bad_batch(rows=(2,)))
    (bundle,) = mon.bundles
    data = json.loads((bundle / "report.json").read_text())
    validate_report(data)
    assert data["monitor"]["depth"] == "sentinel" and data["monitor"]["call"]["mode"] == "train"
    out = tmp_path / "replay.json"
    code = main(["replay", str(bundle), "--json", str(out)], stdout=io.StringIO(), stderr=io.StringIO())
    assert code == 1
    replayed = json.loads(out.read_text())
    validate_report(replayed)
    assert replayed["bundle"]["same_origin"] is True and replayed["bundle"]["step"] == 0


def test_a_pytest_guard_bundle_matches(tmp_path: Path) -> None:
    model = make_lognet()
    batch = bad_batch(rows=(0,))
    first, diagnosis, _ = find_origin(model, batch, mode="eval", backward=False)
    failure = GuardFailure(model="LogNet", phase="forward", kind="inf", samples=(0,), paths=("out",),
                           call_index=0, mode="eval", first_nonfinite=first, diagnosis=diagnosis,
                           module=model, batch=(batch,), rng=None)
    path = write_snapshot(failure_snapshot(failure, "t", test_id="tests/x.py::test_y"), tmp_path)
    data = json.loads((path / "report.json").read_text())
    validate_report(data)
    assert data["pytest"]["test"] == "tests/x.py::test_y" and data["pytest"]["first_nonfinite"]["samples"] == [0]


def test_strict_mode_refuses_to_write_a_report_that_does_not_match(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANPROBE_STRICT_SCHEMA", "1")
    report = Report(status="nonfinite")
    report.verdict = Verdict("unknown", "s")
    report.verdict.cause = "not_a_cause"  # type: ignore[assignment]
    with pytest.raises(ReportSchemaError):
        report.to_json()
    monkeypatch.delenv("NANPROBE_STRICT_SCHEMA")
    assert json.loads(report.to_json())["verdict"]["cause"] == "not_a_cause"
