"""The original failure, end to end: ``python -m ur4rec.demo`` (``make demo``), and the steps behind it that
``examples/original_failure/`` runs one by one.

The original team's mistaken construction (constructor arguments listed by hand, ``sasrec_dropout`` forgotten)
lives only in :mod:`ur4rec.demo.original_setup`; the entry point passes it to :func:`run_demo` as
``build_original``.
"""

from __future__ import annotations

from .facts import eval_facts, fixed_facts, trace_facts, train_facts
from .results import DataChoice, EvalOutcome, Fact, TraceOutcome, TrainOutcome, render_facts
from .steps import (
    ORIGINAL_CONFIG,
    Builder,
    choose_data,
    demo_config,
    dropout_only_fix,
    evaluate_monitored,
    render_diagnosis,
    trace_checkpoint,
    train,
)
from .story import STEPS, DemoReport, Reporter, run_demo

__all__ = [
    "ORIGINAL_CONFIG",
    "STEPS",
    "Builder",
    "DataChoice",
    "DemoReport",
    "EvalOutcome",
    "Fact",
    "Reporter",
    "TraceOutcome",
    "TrainOutcome",
    "choose_data",
    "demo_config",
    "dropout_only_fix",
    "eval_facts",
    "evaluate_monitored",
    "fixed_facts",
    "render_diagnosis",
    "render_facts",
    "run_demo",
    "trace_checkpoint",
    "trace_facts",
    "train",
    "train_facts",
]
