"""``python -m ur4rec.demo``: see :mod:`ur4rec.demo.cli`."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
