"""The per-layer probe: record every module call and name the one that produced the first NaN/Inf.

Lives here: the :class:`Probe` (it owns its hooks), its classifier, read-back queue, records and result.
May import: the core modules (``nanprobe.stats``, ``kinds``, ``walk``, ``execution``) and ``nanprobe.report``.
Imported by: the diagnosis (its hooked run), the monitor (full-depth snapshots), users.

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

from typing import Any

from torch import nn

from nanprobe.errors import InputError, NanprobeError
from nanprobe.execution import execute
from nanprobe.probe.hooks import NameFilter, Probe
from nanprobe.probe.records import INPUT, ROOT_LABEL, CallRecord
from nanprobe.probe.result import FRAME_COLUMNS, ProbeResult

__all__ = ["FRAME_COLUMNS", "INPUT", "ROOT_LABEL", "CallRecord", "NameFilter", "Probe", "ProbeResult",
           "probe_model"]


def probe_model(model: nn.Module, batch: Any, *, backward: bool = False, **probe_kwargs: Any) -> ProbeResult:
    """Run ``model`` on ``batch`` once under a :class:`Probe` and return its result.

    The batch is passed by the contract's convention (dict -> ``model(**b)``, tuple/list -> ``model(*b)``,
    tensor -> ``model(b)``). With ``backward=True`` the output is back-propagated: a scalar as is, otherwise
    the sum of its floating outputs. Grad mode and train/eval are the caller's; the run goes through
    :func:`nanprobe.execution.execute`, so the model's buffers, ``.grad`` and the RNG are left as they were.
    """
    probe = Probe(model, backward=backward, **probe_kwargs)
    try:
        run = execute(model, batch, mode=None, backward=backward, instrument=lambda: probe)
    except RuntimeError as e:
        if backward and "BackwardHookFunction" in str(e):
            raise NanprobeError(
                "backward probing uses full backward hooks, which cannot watch a module whose output is "
                "then modified in place (e.g. nn.ReLU(inplace=True)); set inplace=False or probe the "
                f"forward only: {e}") from e
        raise
    if backward and run.gradients is None:
        raise InputError("backward=True but no floating output requires grad (run with grad enabled)")
    return probe.result()
