"""Diagnose why a model goes non-finite: control, localization, replay matrix, samples, verdict."""

from __future__ import annotations

from nanprobe.diagnose.audit import audit_config
from nanprobe.diagnose.engine import diagnose
from nanprobe.diagnose.result import CONTRACT_KEYS, Diagnosis
from nanprobe.diagnose.runner import pass_budget

__all__ = ["CONTRACT_KEYS", "Diagnosis", "audit_config", "diagnose", "pass_budget"]
