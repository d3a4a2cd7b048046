"""nanprobe's command line: ``nanprobe trace``, ``nanprobe scan`` and friends (see :mod:`nanprobe.cli.main`).

Lives here: the entry point and its one error policy (exit statuses), one module per command, the consoles.
May import: every other part of nanprobe (it is the outermost edge). Imported by: nobody but the console
script and ``python -m nanprobe``.
"""

from __future__ import annotations
