"""Data flow of non-finite values between ops: which op produced the value that reached the output."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import torch

from nanprobe.kinds import FINITE, NAN, NEGINF, Kind, report_kind

__all__ = ["Flow", "OpEvent", "storage_key", "trace_back"]


def storage_key(t: torch.Tensor) -> Any:
    """Identity of the memory a tensor lives in (views and in-place results share it)."""
    try:
        return ("s", t.untyped_storage().data_ptr(), t.device.type)
    except (RuntimeError, NotImplementedError, TypeError):
        return ("t", id(t))


@dataclass
class OpEvent:
    """One op call whose output carried a non-finite value."""

    index: int
    op: str
    module: str
    module_type: str
    phase: str
    out_keys: list[Any]
    in_keys: list[Any]
    in_kinds: list[Kind]
    out_kinds: list[Kind]
    mask_consumer: bool = False
    call: int | None = None
    node: str | None = None
    inner_op: str | None = None
    samples: list[int] = field(default_factory=list)
    source: str | None = None

    @property
    def producer(self) -> bool:
        """Finite inputs, non-finite output; -inf masks fed to a softmax/attention op count as finite."""
        if not self.in_kinds:
            return True
        return self.mask_consumer and all(k == NEGINF for k in self.in_kinds)

    @property
    def kind(self) -> str:
        """``"nan"`` when any output carries NaN, else ``"inf"``."""
        return report_kind(reduce(lambda a, b: a | b, self.out_kinds, FINITE)) or "inf"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "module": self.module, "phase": self.phase, "kind": self.kind,
                "samples": list(self.samples), "source": self.source, "node": self.node}


@dataclass
class Flow:
    """Where the non-finite output came from."""

    origin: OpEvent | None = None
    leaf: str | None = None  # "<input>" or a parameter/buffer name, when the chain starts outside any op
    chain: set[int] = field(default_factory=set)
    latent: list[OpEvent] = field(default_factory=list)
    unknown_start: bool = False
    """The origin op read a value that was already non-finite but made outside every op seen (e.g. a weight
    cast by autocast before the localization run started)."""


# Ops that write -inf on purpose when asked to (a mask): masked_fill(x, m, -inf), where(m, x, -inf), full(-inf).
_MASK_FILLS = ("masked_fill", "where", "full", "full_like", "new_full", "fill", "index_fill", "masked_scatter")


def _base(op: str) -> str:
    return op.removeprefix("aten.").split(".")[0].rstrip("_")


def _intentional(events: list[OpEvent], writers: dict[Any, list[int]]) -> set[int]:
    """Positions of events whose output is an intentional mask: only -inf, written by a mask fill from finite
    inputs, or made from such masks alone (a softmax/log_softmax over them, a triu, an add to the scores).
    Their -inf is the mask's, not a failure."""
    found: set[int] = set()
    for pos, e in enumerate(events):
        if not e.out_kinds or any(k != NEGINF for k in e.out_kinds):
            continue
        if not e.in_kinds:
            if _base(e.op) in _MASK_FILLS:
                found.add(pos)
            continue
        sources = [max((p for p in writers.get(k, []) if p < pos), default=None) for k in e.in_keys]
        if all(src is not None and src in found for src in sources):
            found.add(pos)
    return found


def trace_back(events: list[OpEvent], final_keys: list[Any], *, param_keys: dict[Any, str],
               input_keys: set[Any], phase: str = "forward") -> Flow:
    """Walk from the storages of the non-finite final values back through the ops that wrote them to the
    earliest producer on the chain (or to the input/parameter already carrying the value). An op that turns
    intentional ``-inf`` masks into NaN or +Inf (``0 * -inf`` in a loss) is the producer: the masks are not
    the failure."""
    everything = events
    events = [e for e in events if e.phase == phase] if phase == "backward" else events
    writers: dict[Any, list[int]] = {}
    for pos, e in enumerate(events):
        for k in e.out_keys:
            writers.setdefault(k, []).append(pos)
    masks = _intentional(events, writers)
    producers: set[int] = set()
    introduced: set[int] = set()
    leaves: list[str] = []
    chain: set[int] = set()
    seen: set[tuple[Any, int]] = set()
    final_keys = list(final_keys)
    todo: list[tuple[Any, int]] = [(k, len(events)) for k in final_keys]
    while todo:
        key, before = todo.pop()
        if (key, before) in seen:
            continue
        seen.add((key, before))
        earlier = [p for p in writers.get(key, []) if p < before]
        if not earlier:
            if key in input_keys:
                leaves.append("<input>")
            elif key in param_keys:
                leaves.append(param_keys[key])
            elif before < len(events):  # a constant made outside any op: its first consumer introduced it
                producers.add(before)
                introduced.add(before)
            continue
        pos = earlier[-1]
        chain.add(pos)
        e = events[pos]
        sources = [max((p for p in writers.get(k, []) if p < pos), default=None) for k in e.in_keys]
        from_masks = bool(sources) and all(src is not None and src in masks for src in sources)
        if e.producer or (from_masks and pos not in masks):
            producers.add(pos)
            continue
        todo.extend((k, pos) for k, kinds in zip(e.in_keys, e.in_kinds)
                    if not (e.mask_consumer and kinds == NEGINF))  # masks are not the failure
    flow = Flow(chain={events[p].index for p in chain})
    if "<input>" in leaves:
        flow.leaf = "<input>"
    elif leaves:
        flow.leaf = sorted(leaves)[0]
    if producers:
        flow.origin = events[min(producers)]
        flow.unknown_start = min(producers) in introduced
    elif flow.leaf is None and final_keys:
        flow.origin = _kind_aware(events)
    flow.latent = [e for e in everything if e.producer and e.phase == "forward"
                   and (phase == "backward" or e.index not in flow.chain) and e is not flow.origin]
    return flow


def _kind_aware(events: list[OpEvent]) -> OpEvent | None:
    """Fallback when storage links break: the first op emitting NaN from NaN-free inputs, else the first
    producer."""
    for e in events:
        if any(k & NAN for k in e.out_kinds) and not any(k & NAN for k in e.in_kinds):
            return e
    return next((e for e in events if e.producer), None)
