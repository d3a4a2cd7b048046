"""Load and validate table.yaml, and look entries up by any spelling of an op, node, loss or functional."""

from __future__ import annotations

import functools
import string
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from nanprobe.errors import NanprobeError
from nanprobe.knowledge.checks import CHECKS
from nanprobe.knowledge.model import CAUSES, KINDS, OUTCOMES, PHASES, PLACEHOLDERS, Condition, Entry, covers, union
from nanprobe.knowledge.names import key

__all__ = ["Table", "TableError", "load_table", "parse_table"]

_ENTRY_KEYS = {"name", "kind", "phase", "conditions", "aliases", "functional", "aten_ops", "note",
               "step_follows_gradient"}
_CONDITION_KEYS = {"id", "when", "phase", "outcome", "check", "cause", "fix"}


class TableError(NanprobeError, ValueError):
    """table.yaml is malformed; the message names the entry and the field."""


class Table:
    """The validated entries, with lookups by op name (any spelling) and by loss class or functional name."""

    def __init__(self, entries: tuple[Entry, ...]) -> None:
        self.entries = entries
        self._ops: dict[str, Entry] = {}
        self._losses: dict[str, Entry] = {}
        self._by_aten: dict[str, list[Entry]] = {}
        self._optimizers: dict[str, Entry] = {}
        for entry in entries:
            if entry.kind == "op":
                for name in (entry.name, *entry.aliases):
                    _claim(self._ops, key(name), entry, "op name")
            elif entry.kind == "optimizer":
                for name in (entry.name, *entry.aliases):
                    _claim(self._optimizers, name, entry, "optimizer name")
            else:
                for name in (entry.name, *entry.functional):
                    _claim(self._losses, key(name), entry, "loss name")
                for op in dict.fromkeys(key(o) for o in entry.aten_ops):
                    self._by_aten.setdefault(op, []).append(entry)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ops(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.kind == "op")

    @property
    def losses(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.kind == "loss")

    @property
    def optimizers(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.kind == "optimizer")

    def entry_for_optimizer(self, name: str) -> Entry | None:
        """``Adam`` (or ``torch.optim.Adam``) -> the Adam entry; optimizer classes are matched exactly."""
        return self._optimizers.get(name.rsplit(".", 1)[-1])

    def entry_for_op(self, op: str) -> Entry | None:
        """``aten.log``, ``log``, ``log_``, ``log.default`` or ``LogBackward0`` -> the ``log`` entry."""
        return self._ops.get(key(op))

    def entry_for_loss(self, name: str) -> Entry | None:
        """``CrossEntropyLoss`` or ``cross_entropy`` (or ``F.cross_entropy``) -> the CrossEntropyLoss entry."""
        return self._losses.get(key(name.rsplit(".", 1)[-1]))

    def loss_for_op(self, op: str) -> tuple[Entry, ...]:
        """The losses that run through ``op`` (any spelling), in table order."""
        return tuple(self._by_aten.get(key(op), ()))


def _claim(index: dict[str, Entry], name: str, entry: Entry, what: str) -> None:
    other = index.get(name)
    if other is not None and other is not entry:
        raise TableError(f"{what} {name!r} is claimed by both {other.name} and {entry.name}")
    index[name] = entry


# ------------------------------------------------------------------------------------------------- parsing
def _text(raw: Mapping[str, Any], field: str, where: str, required: bool = True) -> str | None:
    value = raw.get(field)
    if value is None:
        if required:
            raise TableError(f"{where}: missing {field!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise TableError(f"{where}: {field!r} must be a non-empty string, not {value!r}")
    return value.strip()


def _names(raw: Mapping[str, Any], field: str, where: str) -> tuple[str, ...]:
    value = raw.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TableError(f"{where}: {field!r} must be a list of names, not {value!r}")
    return tuple(value)


def _choice(value: str, allowed: tuple[str, ...], field: str, where: str) -> str:
    if value not in allowed:
        raise TableError(f"{where}: unknown {field} {value!r} (one of: {', '.join(allowed)})")
    return value


def _check_fix(fix: str, where: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(fix) if f is not None]
    except ValueError as e:
        raise TableError(f"{where}: fix is not a valid template ({e}): {fix!r}") from None
    unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
    if unknown:
        raise TableError(f"{where}: fix uses unknown placeholder(s) {unknown}; allowed: {list(PLACEHOLDERS)}")


def _condition(raw: Any, entry_phase: str, where: str) -> Condition:
    if not isinstance(raw, dict):
        raise TableError(f"{where}: a condition must be a mapping, not {raw!r}")
    extra = sorted(set(raw) - _CONDITION_KEYS)
    if extra:
        raise TableError(f"{where}: unknown field(s) {extra}")
    cid = _text(raw, "id", where)
    where = f"{where} condition {cid!r}"
    phase = _choice(_text(raw, "phase", where, required=False) or entry_phase, PHASES, "phase", where)
    if not covers(entry_phase, phase) and phase != entry_phase:
        raise TableError(f"{where}: phase {phase!r} is outside the entry's phase {entry_phase!r}")
    cause = _choice(_text(raw, "cause", where) or "", CAUSES, "cause", where)
    outcome = _choice(_text(raw, "outcome", where, required=False) or "nonfinite", OUTCOMES, "outcome", where)
    check = _text(raw, "check", where, required=False)
    if check is not None and check not in CHECKS:
        raise TableError(f"{where}: unknown check {check!r}")
    fix = _text(raw, "fix", where) or ""
    _check_fix(fix, where)
    return Condition(id=cid or "", when=_text(raw, "when", where) or "", phase=phase, cause=cause, fix=fix,
                     outcome=outcome, check=check)


def _entry(raw: Any, index: int) -> Entry:
    if not isinstance(raw, dict):
        raise TableError(f"entry {index}: must be a mapping, not {raw!r}")
    name = _text(raw, "name", f"entry {index}") or ""
    where = f"entry {name!r}"
    extra = sorted(set(raw) - _ENTRY_KEYS)
    if extra:
        raise TableError(f"{where}: unknown field(s) {extra}")
    kind = _choice(_text(raw, "kind", where) or "", KINDS, "kind", where)
    phase = _choice(_text(raw, "phase", where) or "", PHASES, "phase", where)
    raw_conditions = raw.get("conditions")
    if raw_conditions is None:
        raise TableError(f"{where}: missing 'conditions' (a list; [] for a point torch keeps finite)")
    if not isinstance(raw_conditions, list):
        raise TableError(f"{where}: 'conditions' must be a list, not {raw_conditions!r}")
    conditions = tuple(_condition(c, phase, where) for c in raw_conditions)
    ids = [c.id for c in conditions]
    if len(set(ids)) != len(ids):
        raise TableError(f"{where}: duplicate condition ids {ids}")
    note = _text(raw, "note", where, required=False)
    if not conditions and note is None:
        raise TableError(f"{where}: an entry without conditions needs a note saying what torch does")
    if conditions and union([c.phase for c in conditions]) != phase:
        raise TableError(f"{where}: phase {phase!r} but its conditions cover "
                         f"{union([c.phase for c in conditions])!r}")
    functional, aten_ops = _names(raw, "functional", where), _names(raw, "aten_ops", where)
    if kind != "loss" and (functional or aten_ops):
        raise TableError(f"{where}: 'functional' and 'aten_ops' are for losses")
    if (kind == "optimizer") != (phase == "step"):
        raise TableError(f"{where}: phase 'step' is for optimizers, and an optimizer's phase is 'step'")
    if kind == "loss" and not aten_ops:
        raise TableError(f"{where}: a loss needs 'aten_ops' (the aten ops it runs through)")
    aliases = _names(raw, "aliases", where)
    if kind == "loss" and aliases:
        raise TableError(f"{where}: losses list other names under 'functional'")
    follows = raw.get("step_follows_gradient", False)
    if not isinstance(follows, bool) or (follows and kind != "optimizer"):
        raise TableError(f"{where}: 'step_follows_gradient' is true or false, and for optimizers")
    return Entry(name=name, kind=kind, phase=phase, conditions=conditions, aliases=aliases, functional=functional,
                 aten_ops=aten_ops, note=note, step_follows_gradient=follows)


def parse_table(text: str) -> Table:
    """Parse and validate the YAML text of a table; :class:`TableError` names the first problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TableError(f"table is not valid YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise TableError("table must be a mapping with an 'entries' list")
    if data.get("version") != 1:
        raise TableError(f"unsupported table version {data.get('version')!r} (expected 1)")
    entries = tuple(_entry(raw, i) for i, raw in enumerate(data["entries"]))
    names = [(e.kind, e.name) for e in entries]
    if len(set(names)) != len(names):
        raise TableError("duplicate entry names")
    return Table(entries)


def table_path() -> Path:
    return Path(str(resources.files("nanprobe.knowledge").joinpath("table.yaml")))


@functools.cache
def load_table() -> Table:
    """The package's table, parsed and validated once."""
    return parse_table(table_path().read_text(encoding="utf-8"))
