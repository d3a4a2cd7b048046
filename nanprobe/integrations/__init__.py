"""Glue for other frameworks, one module each; every one imports its framework lazily (or never), so nanprobe
works without any of them installed.

- ``lightning``: ``NanprobeCallback`` for a Lightning ``Trainer``;
- ``transformers``: ``NanprobeCallback`` for the Hugging Face ``Trainer``;
- ``accelerate``: ``monitor(accelerator, model, ...)`` for a loop written with accelerate;
- ``hf_checkpoints``: building a model from a transformers config (the loaders' ``save_pretrained`` folders);
- ``_glue``: what the callbacks share (start, steps, loss, release), framework-neutral.

May import: every part of nanprobe below the edges (the monitor, the report, the loaders' helpers) and its
own framework. Imported by: users (one line each), the loaders (``hf_checkpoints``).
"""
