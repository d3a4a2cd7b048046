"""The report: the typed records every nanprobe report is made of, and the one strict-JSON writer.

Lives here: the report types (:mod:`~nanprobe.report.types`), their plain-data base
(:mod:`~nanprobe.report.record`), strict JSON (:mod:`~nanprobe.report.jsonio`), the JSON Schema generated
from the types (:mod:`~nanprobe.report.schema`, shipped as ``nanprobe/schema/report.schema.json``) and the keys
a history row may carry beyond plain numbers (:mod:`~nanprobe.report.history`: an outlier row's record).
May import: only the standard library and ``nanprobe._version``. Everything that fills or reads a report
imports this package; it imports none of them.
"""

from __future__ import annotations

from nanprobe.report.jsonio import dumps, to_plain, write_json
from nanprobe.report.record import Record
from nanprobe.report.types import (
    CAUSES,
    CONTRACT_KEYS,
    INPUT,
    LOSS,
    ROOT_LABEL,
    BundleInfo,
    BundleReport,
    CallInfo,
    Cause,
    Detection,
    FirstNonfinite,
    Incident,
    LatentEntry,
    LayerRow,
    PytestInfo,
    ReplayEntry,
    ReplayReport,
    Report,
    Root,
    Verdict,
    WarningInfo,
    display_name,
)

__all__ = [
    "CAUSES", "CONTRACT_KEYS", "INPUT", "LOSS", "ROOT_LABEL", "BundleInfo", "BundleReport", "CallInfo", "Cause",
    "Detection", "FirstNonfinite", "Incident", "LatentEntry", "LayerRow", "PytestInfo", "Record", "ReplayEntry",
    "ReplayReport", "Report", "Root", "Verdict", "WarningInfo", "display_name", "dumps", "to_plain", "write_json",
]
