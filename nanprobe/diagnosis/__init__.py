"""Diagnose why a model goes non-finite: control, localization, replay matrix, samples, verdict."""

from __future__ import annotations

from nanprobe.diagnosis.audit import audit_config
from nanprobe.diagnosis.engine import diagnose
from nanprobe.diagnosis.result import CONTRACT_KEYS, Diagnosis
from nanprobe.diagnosis.runner import pass_budget

__all__ = ["CONTRACT_KEYS", "Diagnosis", "audit_config", "diagnose", "pass_budget"]
