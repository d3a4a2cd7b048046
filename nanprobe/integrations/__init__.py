"""Glue for other frameworks (Lightning, the Hugging Face Trainer and checkpoints, accelerate), one module
each; every one imports its framework lazily, so nanprobe works without any of them installed.

May import: every part of nanprobe below the edges (the monitor, the report, the loaders' helpers) and its
own framework. Imported by: users (one line each), the loaders (``transformers`` for HF checkpoints).
"""
