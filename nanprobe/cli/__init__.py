"""nanprobe's command line: ``nanprobe trace``, ``nanprobe scan`` and friends (see :mod:`nanprobe.cli.main`)."""

from __future__ import annotations
