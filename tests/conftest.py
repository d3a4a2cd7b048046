"""Suite-wide settings: small thread pools keep the suite predictable on a 2-core machine."""

from __future__ import annotations

import os

import torch

torch.set_num_threads(1)

# Every report nanprobe writes during the suite (trace, replay, bundles, pytest reports; subprocesses inherit
# it) is checked against the shipped JSON Schema before it is written.
os.environ.setdefault("NANPROBE_STRICT_SCHEMA", "1")
