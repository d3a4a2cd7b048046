"""The original failure, end to end: the steps behind ``nanprobe demo`` and ``examples/original_failure/``.

The original team's mistaken construction (constructor arguments listed by hand, ``sasrec_dropout`` forgotten)
lives only in ``examples/original_failure/original_setup.py`` and is passed in as ``build_original``.
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
    replay_bundle,
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
    "render_facts",
    "replay_bundle",
    "run_demo",
    "trace_checkpoint",
    "trace_facts",
    "train",
    "train_facts",
]
