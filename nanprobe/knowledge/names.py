"""How op names seen at runtime are matched to table names.

Ops reach nanprobe as ``aten.log``, ``log.default``, ``aten::log_`` (in place) or, in the backward pass, as
autograd node names such as ``LogBackward0`` or ``NativeLayerNormBackward0``. All of them reduce to one key:
the base name, lower case, without underscores (``log``, ``nativelayernorm``). Dropping underscores also
joins private and public spellings (``_linalg_eigh`` and ``LinalgEighBackward0``; ``_log_softmax`` and
``LogSoftmaxBackward0``) and node names whose digits split a word (``Log1PBackward0`` is ``log1p``)."""

from __future__ import annotations

import re

__all__ = ["base_name", "key"]

_NODE = re.compile(r"Backward\d*$")
_PREFIXES = ("torch::autograd::", "aten::", "aten.", "torch.ops.aten.")


def base_name(name: str) -> str:
    """``aten.log.default`` -> ``log``; ``LogBackward0`` -> ``Log``; ``log_`` -> ``log_`` (case and
    underscores are left for :func:`key`)."""
    text = name.strip()
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    text = text.split(".", 1)[0]
    return _NODE.sub("", text) or text


def key(name: str) -> str:
    """The lookup key of any spelling of an op, node, loss or functional name."""
    return base_name(name).replace("_", "").lower()
