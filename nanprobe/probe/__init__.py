"""The per-layer probe: record every module call and name the one that produced the first NaN/Inf.

>>> with Probe(model) as probe:
...     model(batch)
>>> result = probe.result()          # status, origin, latent, records; to_frame() / to_dict() / rich

Names: ``CallRecord.module`` is the qualified name from ``named_modules()`` -- ``""`` for the root module
(tables show ``<root>``) and ``"<input>"`` for the synthetic record of a batch that already carried NaN/Inf.
Roles: ``origin`` (the producer whose values reached the output), ``propagated`` (non-finite calls whose
kinds reached the output, later producers of an already flowing kind included), ``latent`` (producers and
carriers of values that never reached an output), ``None`` (finite).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from nanprobe.errors import InputError, NanprobeError
from nanprobe.probe.hooks import NameFilter, Probe
from nanprobe.probe.records import INPUT, ROOT_LABEL, CallRecord
from nanprobe.probe.result import FRAME_COLUMNS, ProbeResult
from nanprobe.walk import iter_tensors

__all__ = ["FRAME_COLUMNS", "INPUT", "ROOT_LABEL", "CallRecord", "NameFilter", "Probe", "ProbeResult",
           "probe_model"]


def _call(model: nn.Module, batch: Any) -> Any:
    try:
        from nanprobe.batches import call_model
    except ImportError:  # pragma: no cover - batches.py ships with the package
        if isinstance(batch, dict):
            return model(**batch)
        if isinstance(batch, (tuple, list)):
            return model(*batch)
        return model(batch)
    return call_model(model, batch)


def probe_model(model: nn.Module, batch: Any, *, backward: bool = False, **probe_kwargs: Any) -> ProbeResult:
    """Run ``model`` on ``batch`` once under a :class:`Probe` and return its result.

    The batch is passed by the contract's convention (dict -> ``model(**b)``, tuple/list -> ``model(*b)``,
    tensor -> ``model(b)``). With ``backward=True`` the output is back-propagated: a scalar as is, otherwise
    the sum of its floating outputs. Grad mode and train/eval are the caller's.
    """
    with Probe(model, backward=backward, **probe_kwargs) as probe, warnings.catch_warnings():
        # torch warns that full backward hooks fire on outputs when the batch does not require grad
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        try:
            out = _call(model, batch)
        except RuntimeError as e:
            if backward and "BackwardHookFunction" in str(e):
                raise NanprobeError(
                    "backward probing uses full backward hooks, which cannot watch a module whose output is "
                    "then modified in place (e.g. nn.ReLU(inplace=True)); set inplace=False or probe the "
                    f"forward only: {e}") from e
            raise
        if backward:
            leaves = [t for _, t in iter_tensors(out) if t.dtype.is_floating_point and t.requires_grad]
            if not leaves:
                raise InputError("backward=True but no floating output requires grad (run with grad enabled)")
            loss = leaves[0] if len(leaves) == 1 and leaves[0].dim() == 0 else sum(t.sum() for t in leaves)
            assert isinstance(loss, torch.Tensor)
            loss.backward()
    return probe.result()
