"""The report's JSON Schema, generated from the report types, and the Markdown field table the README shows.

    python -m nanprobe.report.schema            # print the schema (what nanprobe/schema/report.schema.json holds)
    python -m nanprobe.report.schema --write    # regenerate nanprobe/schema/report.schema.json
    python -m nanprobe.report.schema --markdown # the README's field table

One schema covers every report nanprobe writes: ``nanprobe trace --json``, ``nanprobe replay --json`` and a
bundle's ``report.json`` (monitor or pytest guard). The contract's keys and ``nanprobe_version`` are required;
every other key is optional, and no key outside the types is allowed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from typing import Any

from nanprobe.report.jsonio import dumps, write_json
from nanprobe.report.record import Record, field_types
from nanprobe.report.types import CONTRACT_KEYS, BundleReport, ReplayReport, Report
from nanprobe.report.validate import SCHEMA_FILE

__all__ = ["SCHEMA_PATH", "build_schema", "load_schema", "markdown_table"]

SCHEMA_PATH = SCHEMA_FILE
_DOCUMENTS: tuple[type[Report], ...] = (Report, BundleReport, ReplayReport)
_NUMBER_TEXT = ("nan", "inf", "-inf")  # how strict JSON spells a non-finite float


def _type_schema(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = [_type_schema(a, defs) for a in options]
        inner.append({"type": "null"})
        return {"anyOf": inner}
    if origin is typing.Literal:
        return {"enum": list(typing.get_args(hint))}
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return {"type": "array", "items": _type_schema(item, defs)}
    if origin is dict:
        return {"type": "object"}
    if isinstance(hint, type) and issubclass(hint, Record):
        name = hint.__name__
        if name not in defs:
            defs[name] = {}  # reserve (recursion)
            defs[name] = _record_schema(hint, defs)
        return {"$ref": f"#/$defs/{name}"}
    simple = {str: "string", bool: "boolean", int: "integer"}
    if hint in simple:
        return {"type": simple[hint]}
    if hint is float:
        return {"anyOf": [{"type": "number"}, {"enum": list(_NUMBER_TEXT)}]}
    return {}  # Any


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


def _record_schema(cls: type[Record], defs: dict[str, Any], *, required: tuple[str, ...] | None = None
                   ) -> dict[str, Any]:
    props = {name: _type_schema(hint, defs) for name, hint in field_types(cls).items()}
    if required is None:
        required = tuple(f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                         if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    out: dict[str, Any] = {"type": "object", "description": _doc(cls), "properties": props,
                           "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out


def build_schema() -> dict[str, Any]:
    """The schema of every report document (the union of :data:`_DOCUMENTS`' fields)."""
    defs: dict[str, Any] = {}
    props: dict[str, Any] = {"nanprobe_version": {"type": "string"}}
    for cls in _DOCUMENTS:
        for name, hint in field_types(cls).items():
            props.setdefault(name, _type_schema(hint, defs))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://nanprobe.dev/schema/report.schema.json",
        "title": "nanprobe report",
        "description": "A report written by nanprobe trace --json, nanprobe replay --json, or a post-mortem "
                       "bundle's report.json. first_nonfinite and verdict are null when status is clean.",
        "type": "object",
        "properties": props,
        "required": ["nanprobe_version", *CONTRACT_KEYS],
        "additionalProperties": False,
        "$defs": dict(sorted(defs.items())),
    }


def load_schema() -> dict[str, Any]:
    """The schema shipped with the package."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _describe(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" if isinstance(v, str) else "null" for v in prop["enum"])
    if "anyOf" in prop:
        parts = [_describe(p) for p in prop["anyOf"]]
        if parts[:2] == ["number", "`nan` \\| `inf` \\| `-inf`"]:
            parts = ["number", *parts[2:]]
        return " or ".join(dict.fromkeys(parts))
    if prop.get("type") == "array":
        return f"list of {_describe(prop.get('items', {}))}"
    return str(prop.get("type", "any"))


def markdown_table(schema: dict[str, Any] | None = None) -> str:
    """The README's report reference: one table per object type, one row per key."""
    schema = schema or build_schema()
    required = set(schema.get("required", []))
    lines = ["| key | type | required |", "|---|---|---|"]
    for name, prop in schema["properties"].items():
        lines.append(f"| `{name}` | {_describe(prop)} | {'yes' if name in required else ''} |")
    for def_name, sub in schema["$defs"].items():
        lines += ["", f"**{def_name}**: {sub.get('description', '')}", "", "| key | type | required |",
                  "|---|---|---|"]
        sub_required = set(sub.get("required", []))
        for name, prop in sub["properties"].items():
            lines.append(f"| `{name}` | {_describe(prop)} | {'yes' if name in sub_required else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanprobe.report.schema", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"write {SCHEMA_PATH.name} into the package")
    parser.add_argument("--markdown", action="store_true", help="print the README's field table")
    args = parser.parse_args(argv)
    schema = build_schema()
    if args.markdown:
        sys.stdout.write(markdown_table(schema))
    elif args.write:
        SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
        write_json(SCHEMA_PATH, schema)
    else:
        sys.stdout.write(dumps(schema) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
