"""Diagnose why a model goes non-finite: control run, op-level localization, replay matrix, sample bisection,
config audit and verdict, within a forward-pass budget.

Lives here: the engine (:func:`diagnose`) and its steps, each in its own module. May import: the core modules
(``nanprobe.execution``, ``batches``, ``kinds``, ``sentinel``, ``rng``, ``restore``), ``nanprobe.report`` and
``nanprobe.probe``. Imported by: the monitor, the pytest guard, the CLI.
"""

from __future__ import annotations

from nanprobe.diagnosis.audit import audit_config
from nanprobe.diagnosis.engine import diagnose, pass_budget
from nanprobe.report import CONTRACT_KEYS
from nanprobe.report import Report as Diagnosis

__all__ = ["CONTRACT_KEYS", "Diagnosis", "audit_config", "diagnose", "pass_budget"]
