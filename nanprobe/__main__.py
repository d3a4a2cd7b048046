"""``python -m nanprobe ...``: the same command line as the ``nanprobe`` script."""

from __future__ import annotations

from nanprobe.cli.main import entry

if __name__ == "__main__":
    entry()
