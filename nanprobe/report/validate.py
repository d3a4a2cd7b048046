"""Check a report document against the JSON Schema shipped in ``nanprobe/schema/report.schema.json``.

Needs the ``jsonschema`` package (a test dependency). With the environment variable ``NANPROBE_STRICT_SCHEMA``
set, every report nanprobe writes is checked before it is written (the test suite sets it), so no report can
drift from the schema unnoticed.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_FILE", "ReportSchemaError", "is_report", "strict", "validate_report"]

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schema" / "report.schema.json"
STRICT_ENV = "NANPROBE_STRICT_SCHEMA"


class ReportSchemaError(ValueError):
    """A report does not match the shipped schema: a bug in nanprobe."""


@functools.cache
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def is_report(data: Any) -> bool:
    """Whether ``data`` is a report document (it carries ``nanprobe_version`` and ``status``)."""
    return isinstance(data, Mapping) and "nanprobe_version" in data and "status" in data


def validate_report(data: Mapping[str, Any]) -> None:
    """Raise :class:`ReportSchemaError` naming the first mismatch (path and message)."""
    from jsonschema.exceptions import best_match

    errors = list(_validator().iter_errors(data))
    if errors:
        first = best_match(errors)  # descends into anyOf branches to the most specific mismatch
        where = "/".join(str(p) for p in first.absolute_path) or "<top>"
        raise ReportSchemaError(f"report does not match {SCHEMA_FILE.name} at {where}: {first.message}"
                                f"{f' (+{len(errors) - 1} more)' if len(errors) > 1 else ''}")


def strict() -> bool:
    """Whether reports are checked as they are written (``NANPROBE_STRICT_SCHEMA`` is set)."""
    return bool(os.environ.get(STRICT_ENV))
