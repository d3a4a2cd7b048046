"""Config audit: did the run config's hyperparameters reach the built model?"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from nanprobe.diagnosis.replay import dropout_sites

__all__ = ["audit_config", "model_sites"]

_SECTIONS = {"model", "train", "training", "trainer", "optim", "optimizer", "data", "config", "args", "hparams",
             "params", "hyperparameters", "net", "network", "arch", "architecture", "run"}
_CATEGORY_TOKENS = {  # checked in this order: "layer_norm_eps" is an eps, not a block count
    "eps": {"eps", "epsilon", "norm_eps", "layer_norm_eps", "ln_eps"},
    "dropout": {"dropout", "drop", "droprate", "pdrop", "dropout_p"},
    "heads": {"heads", "head", "nhead", "nheads", "num_heads", "n_heads", "n_head"},
    "blocks": {"layers", "layer", "blocks", "block", "n_layer", "n_layers", "num_layers", "depth", "nlayers"},
    "hidden": {"hidden", "d_model", "dmodel", "embed", "embedding", "emb", "dim", "hidden_size", "hidden_dim",
               "embed_dim", "n_embd", "width", "d"},
}
_FILLER = {"num", "n", "prob", "probability", "rate", "size", "p", "ratio", "of", "the", "model", "value", "norm", "ln",
           "layernorm", "max", "min", "use", "per", "count"}
_ALL_CATEGORY_TOKENS = set().union(*_CATEGORY_TOKENS.values())
_ATTN_TOKENS = {"attn", "attention", "att", "self_attn", "mha"}


@dataclass
class Site:
    module: str
    category: str
    value: float | int
    attention: bool = False


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", text.lower()) if t]


def model_sites(model: nn.Module) -> list[Site]:
    """The model's effective hyperparameters, one entry per place they live."""
    sites: list[Site] = []
    for name, m, attr, p in dropout_sites(model):
        attn = isinstance(m, nn.MultiheadAttention) or any(t in _ATTN_TOKENS for t in _tokens(f"{name}.{attr}"))
        sites.append(Site(name, "dropout", p, attention=attn))
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            sites.append(Site(name, "heads", m.num_heads, attention=True))
            sites.append(Site(name, "hidden", m.embed_dim, attention=True))
        elif isinstance(m, nn.LayerNorm):
            sites.append(Site(name, "eps", m.eps))
            if m.normalized_shape:
                sites.append(Site(name, "hidden", m.normalized_shape[-1]))
        elif isinstance(m, nn.Embedding):
            sites.append(Site(name, "hidden", m.embedding_dim))
        elif isinstance(m, nn.ModuleList) and name and name.rsplit(".", 1)[-1] in {"blocks", "layers", "h", "layer"}:
            sites.append(Site(name, "blocks", len(m)))
        for attr in ("num_heads", "n_heads", "nhead", "n_head"):
            value = getattr(m, attr, None)
            if isinstance(value, int) and not isinstance(m, nn.MultiheadAttention):
                sites.append(Site(name, "heads", value, attention=True))
                break
        for attr in ("d_model", "hidden_size", "hidden_dim", "embed_dim"):
            value = getattr(m, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and not isinstance(m, nn.MultiheadAttention):
                sites.append(Site(name, "hidden", value))
                break
    return sites


def _flatten(config: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in config.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            out.extend(_flatten(value, path))
        else:
            out.append((path, value))
    return out


def _category(leaf_tokens: list[str], leaf: str) -> str | None:
    low = leaf.lower()
    for cat, words in _CATEGORY_TOKENS.items():
        if low in words or any(t in words for t in leaf_tokens):
            if cat == "hidden" and any(t in ("ff", "ffn", "feedforward", "intermediate", "mlp") for t in leaf_tokens):
                return None
            if cat == "dropout" and "path" in leaf_tokens:
                return None
            return cat
    return None


def _equal(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def audit_config(model: nn.Module, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One finding per config key: ``reached`` True (matched the model), False (flagged: the value never
    reached the model), or None with ``checked`` False (no hyperparameter of that name to compare)."""
    sites = model_sites(model)
    module_tokens = {s.module: set(_tokens(s.module)) for s in sites}
    findings: list[dict[str, Any]] = []
    for path, value in _flatten(config):
        key = ".".join(path)
        leaf = path[-1]
        toks = _tokens(leaf)
        cat = _category(toks, leaf)
        if cat is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            findings.append({"key": key, "config_value": value, "model_value": None, "modules": [],
                             "reached": None, "category": cat, "message": f"{key}: not checked"})
            continue
        scope_words = [t for p in path[:-1] for t in _tokens(p) if t not in _SECTIONS]
        scope_words += [t for t in toks if t not in _ALL_CATEGORY_TOKENS and t not in _FILLER]
        attn_only = any(t in _ATTN_TOKENS for t in toks)
        hidden_only = cat == "dropout" and "hidden" in toks
        scope = [w for w in scope_words if w not in _ATTN_TOKENS and not (hidden_only and w == "hidden")]
        unknown = [w for w in scope if not any(w in mt for mt in module_tokens.values())]
        if unknown:  # a key about a part the model has no module for (e.g. ``text_dim``): cannot be checked
            findings.append({"key": key, "config_value": value, "model_value": None, "modules": [],
                             "reached": None, "category": cat,
                             "message": f"{key}: not checked (no module named like {unknown[0]!r})"})
            continue
        matched = [s for s in sites if s.category == cat and all(w in module_tokens[s.module] for w in scope)]
        if attn_only:
            matched = [s for s in matched if s.attention]
        elif hidden_only:
            matched = [s for s in matched if not s.attention]
        if not matched:
            findings.append({"key": key, "config_value": value, "model_value": None, "modules": [],
                             "reached": None, "category": cat, "message": f"{key}: not checked (no matching site)"})
            continue
        wrong = [s for s in matched if not _equal(s.value, value)]
        if cat in ("hidden", "heads") and len(wrong) < len(matched):
            wrong = []  # several sizes live in a model; one matching site is enough
        if not wrong:
            findings.append({"key": key, "config_value": value, "model_value": matched[0].value,
                             "modules": [s.module for s in matched], "reached": True, "category": cat,
                             "message": f"{key}: {value} reached the model ({len(matched)} site(s))"})
            continue
        values = sorted({s.value for s in wrong})
        shown = ", ".join(s.module or "<root>" for s in wrong[:6]) + (", ..." if len(wrong) > 6 else "")
        model_value = values[0] if len(values) == 1 else values
        findings.append({"key": key, "config_value": value, "model_value": model_value,
                         "modules": [s.module for s in wrong], "reached": False, "category": cat,
                         "message": f"{leaf}: config {value}, model {_fmt(model_value)} at {shown} — the value "
                                    "never reached the model"})
    for f in findings:
        f["checked"] = f["reached"] is not None
    return findings


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "/".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)
