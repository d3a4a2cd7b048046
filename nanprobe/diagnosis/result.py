"""The Diagnosis result object: the contract's JSON report plus nanprobe's extension keys."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

__all__ = ["CONTRACT_KEYS", "Diagnosis"]

CONTRACT_KEYS = ("status", "first_nonfinite", "nonfinite_parameters", "latent", "verdict", "replay")


@dataclasses.dataclass
class Diagnosis:
    """Why a model went non-finite, with the evidence. ``to_dict()`` is the contract's JSON report."""

    status: str = "clean"
    first_nonfinite: dict[str, Any] | None = None
    nonfinite_parameters: list[str] = dataclasses.field(default_factory=list)
    latent: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    verdict: dict[str, Any] | None = None
    replay: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    forward_passes: int = 0
    config_audit: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    sample_details: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    layers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    instrumentation: dict[str, Any] | None = None
    repro: str | None = None
    budget: int | None = None

    @property
    def nonfinite(self) -> bool:
        return self.status == "nonfinite"

    @property
    def cause(self) -> str | None:
        return self.verdict["cause"] if self.verdict else None

    def to_dict(self) -> dict[str, Any]:
        return _plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Diagnosis:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self, path: str | Path, **extra: Any) -> Path:
        """Write the report (plus ``extra`` top-level keys such as ``nanprobe_version``) to ``path``."""
        target = Path(path)
        target.write_text(json.dumps({**extra, **self.to_dict()}, indent=2, allow_nan=False) + "\n")
        return target

    def to_frame(self) -> Any:
        """The per-layer rows around the origin as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.layers)


def _plain(obj: Any) -> Any:
    """JSON-ready: tuples to lists, non-finite floats to strings, unknown objects to str."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else str(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)
