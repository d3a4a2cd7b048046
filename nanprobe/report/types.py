"""nanprobe's report: the one set of types that every report (trace, replay, bundle, pytest) is made of.

``Report`` holds the contract's keys (``status``, ``first_nonfinite``, ``nonfinite_parameters``, ``latent``,
``verdict``, ``replay``) and nanprobe's extension keys. A post-mortem bundle's report (``BundleReport``)
extends it with the step it came from and what the monitor or the pytest guard saw; ``nanprobe replay``
adds the ``bundle`` it replayed. ``to_json()`` adds ``nanprobe_version`` and writes strict JSON; the JSON
Schema shipped in ``nanprobe/schema/report.schema.json`` is generated from these classes.

Module names are exactly ``named_modules()`` names (``""`` is the root module; see :func:`display_name`),
``"<input>"`` is the batch itself, ``"<loss>"`` a loss the monitor checked, and ``"<TypeName>"`` a module
that is not registered under the model (e.g. built inside ``forward``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from nanprobe._version import __version__
from nanprobe.report.jsonio import dumps, write_json
from nanprobe.report.record import Record

__all__ = [
    "CAUSES", "CONTRACT_KEYS", "INPUT", "LOSS", "ROOT_LABEL", "BundleInfo", "BundleReport", "CallInfo", "Cause",
    "Detection", "FirstNonfinite", "Incident", "LatentEntry", "LayerRow", "PytestInfo", "ReplayEntry",
    "ReplayReport", "Report", "Root", "Verdict", "WarningInfo", "display_name",
]

Status = Literal["clean", "nonfinite"]
Phase = Literal["forward", "backward"]
ValueKind = Literal["nan", "inf"]
Cause = Literal[
    "nonfinite_input", "nonfinite_parameter", "fully_masked_attention", "dtype_overflow", "numerical_domain",
    "dropout_dependent", "batch_size_dependent", "mode_dependent", "training_divergence", "unknown",
]
CAUSES: tuple[str, ...] = Cause.__args__  # type: ignore[attr-defined]
CONTRACT_KEYS = ("status", "first_nonfinite", "nonfinite_parameters", "latent", "verdict", "replay")

INPUT = "<input>"
"""The module name of a non-finite value that the batch itself carried."""
LOSS = "<loss>"
"""The module name of a non-finite loss the monitor checked (computed outside the model)."""
ROOT_LABEL = "<root>"
"""How the root module (name ``""``) is shown to people."""


def display_name(module: str | None) -> str:
    """A module name as people read it: the root module (``""``) is ``<root>``."""
    return module if module else ROOT_LABEL


@dataclass(eq=False)
class FirstNonfinite(Record):
    """Where the first non-finite value was produced."""

    module: str
    module_type: str
    phase: Phase = "forward"
    kind: ValueKind = "nan"
    batch_index: int = 0
    samples: list[int] = field(default_factory=list)
    op: str | None = None
    source: str | None = None


@dataclass(eq=False)
class Root(Record):
    """Where to fix it, when that is upstream of ``first_nonfinite``: the layer whose output range exploded,
    the parameter responsible, or the training step where a run began to diverge. Any key may be absent."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"module", "parameter", "step", "evidence"})

    module: str | None = None
    parameter: str | None = None
    step: int | None = None
    evidence: str | None = None


@dataclass(eq=False)
class Verdict(Record):
    """The cause, in the contract's vocabulary, with the evidence that supports it and a concrete fix."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"root"})

    cause: Cause
    summary: str
    evidence: list[str] = field(default_factory=list)
    fix: str = ""
    root: Root | None = None


@dataclass(eq=False)
class ReplayEntry(Record):
    """One controlled re-execution: what was varied, and whether the result was still non-finite."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"error"})

    variant: str
    changes: dict[str, Any] = field(default_factory=dict)
    nonfinite: bool = False
    samples: list[int] = field(default_factory=list)
    error: str | None = None


@dataclass(eq=False)
class LatentEntry(Record):
    """A non-finite intermediate value that never reached an output (e.g. a masked ``-inf``)."""

    module: str
    kind: ValueKind
    op: str | None = None
    phase: Phase | None = None


@dataclass(eq=False)
class LayerRow(Record):
    """One module call: the range of its (floating) outputs and its role in the failure."""

    index: int
    module: str
    module_type: str
    phase: Phase = "forward"
    min: float | None = None
    max: float | None = None
    absmax: float | None = None
    mean: float | None = None
    std: float | None = None
    nan: int = 0
    inf: int = 0
    role: Literal["origin", "propagated", "latent"] | None = None
    in_absmax: float | None = None
    """The largest finite |value| among the call's floating inputs (what its output range is compared with)."""

    @property
    def nonfinite(self) -> bool:
        return bool(self.nan or self.inf)


@dataclass(eq=False)
class Report(Record):
    """What a diagnosis found. The contract's keys first, nanprobe's extension keys after them."""

    status: Status = "clean"
    first_nonfinite: FirstNonfinite | None = None
    nonfinite_parameters: list[str] = field(default_factory=list)
    latent: list[LatentEntry] = field(default_factory=list)
    verdict: Verdict | None = None
    replay: list[ReplayEntry] = field(default_factory=list)
    forward_passes: int = 0
    config_audit: list[dict[str, Any]] = field(default_factory=list)
    sample_details: list[dict[str, Any]] = field(default_factory=list)
    layers: list[LayerRow] = field(default_factory=list)
    instrumentation: dict[str, Any] | None = None
    repro: str | None = None
    budget: int | None = None
    deferred: str | None = None
    """Why the diagnosis stopped before its end (a time budget in a training loop): the rest is left to
    ``nanprobe replay``."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"deferred"})

    @property
    def nonfinite(self) -> bool:
        return self.status == "nonfinite"

    @property
    def cause(self) -> str | None:
        return self.verdict.cause if self.verdict else None

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON document: ``nanprobe_version`` first, then :meth:`to_dict`."""
        return {"nanprobe_version": __version__, **self.to_dict()}

    def to_json(self) -> str:
        """Strict JSON text of the report, with ``nanprobe_version``."""
        return dumps(self.to_json_dict())

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` (OSError propagates) and return the path."""
        return write_json(path, self.to_json_dict())

    def to_frame(self) -> Any:
        """The per-layer rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame([row.to_dict() for row in self.layers], columns=[f.name for f in
                                                                            dataclasses.fields(LayerRow)])


@dataclass(eq=False)
class Detection(Record):
    """What a cheap finiteness check saw: which leaves (paths) and batch rows carry NaN/Inf."""

    nonfinite: bool
    kind: ValueKind | None = None
    paths: list[str] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)


@dataclass(eq=False)
class CallInfo(Record):
    """How the failing call ran."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"dtype", "autocast"})

    mode: Literal["eval", "train"] | None = None
    training: bool | None = None
    grad_enabled: bool | None = None
    method: str | None = None
    backward: bool = False
    dtype: str | None = None
    """The dtype the model computed in: its outputs' (autocast's, when it was on), e.g. ``"float16"``."""
    autocast: list[str] | None = None
    """The autocast regions the call ran in, as ``"device:dtype"`` (``nanprobe replay`` re-enters them)."""


@dataclass(eq=False)
class Incident(Record):
    """What the monitor (or the pytest guard) saw at the failing step, and what became of the diagnosis."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"incomplete"})

    phase: str | None = None  # "forward" | "loss" | "backward" | "check" | "parameters"
    detected: Detection | None = None
    reproduced: bool = False
    diagnosis_error: str | None = None
    policy: str | None = None
    depth: str | None = None
    call: CallInfo | None = None
    incomplete: str | None = None
    """Why the bundle is incomplete (nanprobe itself failed while handling the failure), if it is."""


@dataclass(eq=False)
class BundleInfo(Record):
    """The bundle a report belongs to: what it holds (when written) or where it was read from (replay)."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({
        "model", "batch_kind", "device", "path", "step", "rank", "recorded_first_nonfinite", "same_origin"})

    model: dict[str, Any] | None = None
    batch_kind: str | None = None
    device: str | None = None
    path: str | None = None
    step: int | None = None
    rank: int | None = None
    recorded_first_nonfinite: FirstNonfinite | None = None
    same_origin: bool | None = None


@dataclass(eq=False)
class PytestInfo(Record):
    """The test a pytest-guard bundle came from."""

    test: str
    message: str = ""
    model: str = ""
    phase: str = ""
    kind: str = ""
    samples: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    call_index: int | None = None
    mode: str | None = None
    first_nonfinite: FirstNonfinite | None = None
    note: str = ""


@dataclass(eq=False)
class WarningInfo(Record):
    """An early warning the monitor gave before any value was non-finite (a bundle with ``on_warning="dump"``)."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"onset", "slope", "decades", "projected_step"})

    step: int
    signal: str
    message: str
    onset: int | None = None
    slope: float | None = None  # decades per step
    decades: float | None = None
    projected_step: int | None = None


@dataclass(eq=False)
class BundleReport(Report):
    """A post-mortem bundle's report: the diagnosis plus the step it came from."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"pytest", "deferred", "warning", "earlier_warnings"})

    run: str | None = None
    step: int | None = None
    epoch: int | None = None
    rank: int = 0
    world_size: int = 1
    ranks_nonfinite: list[int] = field(default_factory=list)
    created: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    monitor: Incident | None = None
    bundle: BundleInfo | None = None
    pytest: PytestInfo | None = None
    warning: WarningInfo | None = None
    earlier_warnings: list[WarningInfo] | None = None
    """A failure bundle: the early warnings the monitor gave before the failure (the first few)."""


@dataclass(eq=False)
class ReplayReport(Report):
    """``nanprobe replay``: the new diagnosis, plus the bundle it replayed."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"bundle", "deferred", "reproduced"})

    bundle: BundleInfo | None = None
    reproduced: bool | None = None
    """Whether the replay reproduced the failure the bundle recorded (absent for a bundle with none)."""
