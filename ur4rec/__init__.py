"""ur4rec: UR4RecV2MoE (SASRec + text-preference retriever + MoE fusion), nanprobe's reference workload.

Submodules: ``ur4rec.config`` (config dataclasses), ``ur4rec.model`` (the model and ``build_model``),
``ur4rec.data`` (MovieLens-100k and the synthetic set), ``ur4rec.text`` (texts and encoders),
``ur4rec.evaluate`` / ``ur4rec.metrics`` (ranking evaluation), ``ur4rec.train`` (the trainer CLI),
``ur4rec.probe_data`` (eval batches rebuilt from a checkpoint's data spec), ``ur4rec.demo`` (the original
failure end to end: ``python -m ur4rec.demo``).
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
