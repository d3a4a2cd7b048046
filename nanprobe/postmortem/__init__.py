"""Post-mortem bundles: atomic writing, loading, and the Markdown/HTML/env parts."""

from __future__ import annotations

from nanprobe.postmortem.bundle import Bundle, BundleContent, load_bundle, write_bundle

__all__ = ["Bundle", "BundleContent", "load_bundle", "write_bundle"]
