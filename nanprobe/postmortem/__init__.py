"""Post-mortem bundles: assembling one from a snapshot of the failing step, writing it atomically, loading
it, and its Markdown/HTML/env parts.

May import: the core modules and ``nanprobe.report``. Imported by: the monitor, the pytest guard, the CLI.
"""

from __future__ import annotations

from nanprobe.postmortem.bundle import Bundle, BundleContent, load_bundle, write_bundle

__all__ = ["Bundle", "BundleContent", "load_bundle", "write_bundle"]
