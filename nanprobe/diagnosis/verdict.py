"""Rules: from the evidence to the most specific cause in the contract's table, with a concrete fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from nanprobe.diagnosis.samples import ranges
from nanprobe.report import Verdict

__all__ = ["DOMAIN_OPS", "Facts", "decide"]

DOMAIN_OPS = {
    "log": "log of 0 or a negative number", "log2": "log of 0 or a negative number",
    "log10": "log of 0 or a negative number", "log1p": "log1p of -1 or less", "sqrt": "sqrt of a negative number",
    "rsqrt": "rsqrt of 0 or a negative number", "div": "division by zero (x/0 or 0/0)",
    "reciprocal": "reciprocal of 0", "pow": "pow outside its domain (0 to a negative power, negative base)",
    "acos": "acos outside [-1, 1]", "asin": "asin outside [-1, 1]", "atanh": "atanh outside (-1, 1)",
    "acosh": "acosh below 1", "xlogy": "xlogy with y <= 0", "lgamma": "lgamma at a pole", "digamma": "digamma at 0",
    "polygamma": "polygamma at 0", "std": "std of fewer values than the correction",
    "var": "variance of fewer values than the correction", "std_mean": "std of fewer values than the correction",
    "var_mean": "variance of fewer values than the correction", "erfinv": "erfinv outside (-1, 1)",
    "logit": "logit of 0 or 1", "fmod": "fmod by zero", "remainder": "remainder by zero", "mean": "mean of nothing",
    "tan": "tan at a pole", "native_layer_norm": "normalisation of a constant row with eps=0",
    "native_group_norm": "normalisation of a constant group with eps=0",
    "native_batch_norm": "normalisation by a zero or negative variance (eps=0, or a corrupt running_var)",
    "rms_norm": "RMS of a zero row with eps=0",
    "_fused_rms_norm": "RMS of a zero row with eps=0", "cdist": "distance gradient at zero distance",
    "binary_cross_entropy": "log of a probability of exactly 0 or 1",
    "nll_loss_forward": "a mean over zero targets (every target is ignore_index)",
    "nll_loss2d_forward": "a mean over zero targets (every target is ignore_index)",
    "exp": "exp overflow", "cosh": "cosh overflow", "sinh": "sinh overflow",
}
_OVERFLOW_OPS = {"exp", "exp2", "expm1", "pow", "mul", "matmul", "mm", "bmm", "addmm", "baddbmm", "sum", "cumsum",
                 "prod", "cosh", "sinh", "square", "linear", "einsum", "_softmax", "add", "sub", "native_layer_norm",
                 "var", "std", "norm", "linalg_vector_norm", "_to_copy", "convolution"}
_BATCH_STAT_OPS = {"std", "var", "std_mean", "var_mean", "native_batch_norm", "_native_batch_norm_legit",
                   "batch_norm", "_batch_norm_impl_index", "_native_batch_norm_legit_functional", "mean"}
_STRICT_DOMAIN = {"log", "log2", "log10", "log1p", "sqrt", "rsqrt", "div", "reciprocal", "acos", "asin", "atanh",
                  "acosh", "xlogy", "lgamma", "digamma", "polygamma", "erfinv", "logit", "fmod", "remainder", "std",
                  "var", "std_mean", "var_mean", "native_layer_norm", "native_group_norm", "native_batch_norm",
                  "rms_norm", "_fused_rms_norm", "binary_cross_entropy", "nll_loss_forward", "nll_loss2d_forward"}
_DOMAIN_FIX = {
    "native_layer_norm": "a row is constant (zero variance) and the norm has eps=0: give LayerNorm eps > 0 "
                         "(e.g. 1e-5) or drop/mask constant rows (padding) before it",
    "native_group_norm": "a group is constant and eps=0: give GroupNorm eps > 0",
    "native_batch_norm": "a channel's variance is zero with eps=0 or, in eval mode, its running_var is negative "
                         "(a corrupt buffer: `nanprobe scan` lists it): give the norm eps > 0, and reset or "
                         "recompute the running statistics",
    "rms_norm": "a zero row and eps=0: give RMSNorm eps > 0",
    "std": "std of fewer values than the correction (e.g. a batch of one, unbiased): use correction=0, "
           "or guard single-element reductions",
    "var": "variance of fewer values than the correction (e.g. a batch of one, unbiased): use correction=0",
    "div": "the denominator of {where} is 0 for {who} (e.g. a count or sum over an all-padding/empty row): "
           "clamp it (x / d.clamp_min(eps)) or drop empty samples",
    "reciprocal": "{where} gets a 0 for {who}: clamp it away from 0 (x.clamp_min(eps)) before 1/x",
    "log": "{where} gets 0 or a negative number for {who}: clamp its input (x.clamp_min(eps)), or use a stable "
           "form (log_softmax / F.logsigmoid / torch.special.xlogy / log1p)",
    "sqrt": "{where} gets a negative number for {who}: clamp its input (x.clamp_min(0)) or find why it is negative",
    "nll_loss_forward": "every target of the batch is ignore_index, so the mean loss is 0/0: skip such batches "
                        "or use reduction='sum' divided by max(count, 1)",
}
_BACKWARD_FIX = {
    "sqrt": "sqrt's gradient at 0 is infinite: use torch.sqrt(x + eps) or x.clamp_min(eps).sqrt(), or "
            "torch.linalg.vector_norm (whose gradient at 0 is defined)",
    "pow": "pow's gradient is infinite at 0 for exponents below 1: add eps to the base before pow",
    "norm": "the norm's gradient at the zero vector is undefined: add eps inside, or use a safe norm",
    "linalg_vector_norm": "the norm's gradient at the zero vector is undefined: add eps inside "
                          "(torch.sqrt((x * x).sum(-1) + eps)) or F.normalize, which clamps",
    "div": "the gradient divides by a zero denominator: clamp the denominator away from 0",
    "log": "log's gradient at 0 is infinite: clamp the input (x.clamp_min(eps)) before log",
    "acos": "acos's gradient at +-1 is infinite: clamp the input to [-1 + eps, 1 - eps]",
    "asin": "asin's gradient at +-1 is infinite: clamp the input to [-1 + eps, 1 - eps]",
}


@dataclass
class Facts:
    """Everything the rules look at."""

    kind: str = "nan"
    phase: str = "forward"
    batch_index: int = 0
    batch_size: int = 0
    module: str = ""
    module_type: str = ""
    op: str | None = None
    source: str | None = None
    samples: list[int] = field(default_factory=list)
    leaf: str | None = None
    input_rows: list[int] = field(default_factory=list)
    input_paths: list[str] = field(default_factory=list)
    bad_params: list[str] = field(default_factory=list)
    masked: dict[int, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, bool] = field(default_factory=dict)  # variant key -> still non-finite
    evidence: list[str] = field(default_factory=list)
    hooks_changed: bool = False
    dtype: str | None = None
    dropout_sites: list[str] = field(default_factory=list)
    dropout_config: list[str] = field(default_factory=list)  # audit messages about dropout
    composition: bool = False
    rebatch_fixed: str | None = None  # description of the batch-size variant that turned finite
    alone_fails: bool | None = None
    extra_notes: list[str] = field(default_factory=list)
    config_notes: list[str] = field(default_factory=list)  # config values that never reached the model
    latent: list[dict[str, Any]] = field(default_factory=list)


def _fixed(f: Facts, key: str) -> bool:
    return key in f.results and not f.results[key]


def _base(op: str | None) -> str:
    return (op or "").removeprefix("aten.").split(".")[0].rstrip("_")


def _where(f: Facts) -> str:
    place = f"{f.op} in {f.module or '<root>'}" if f.op else (f.module or "<root>")
    return f"{place} ({f.source})" if f.source else place


def decide(f: Facts) -> Verdict:
    """The verdict: cause, summary, evidence, fix."""
    cause, summary, fix = _rule(f)
    evidence = list(f.evidence)
    if f.hooks_changed:
        fast = "TransformerEncoderLayer" in f.module_type or "transformer_encoder" in (f.op or "")
        evidence.insert(0, "per-module hooks -> non-finite output disappeared"
                           f"{' (TransformerEncoderLayer fast path refused)' if fast else ''}"
                           "; localized with a dispatch mode and global module hooks instead")
    config = [f"config audit: {m}" for m in f.config_notes[:3]]
    return Verdict(cause=cause, summary=summary, evidence=evidence + f.extra_notes + config,  # type: ignore[arg-type]
                   fix=fix)


def _rule(f: Facts) -> tuple[str, str, str]:
    base = _base(f.op)
    shown = ", ".join(map(str, f.samples[:12])) + (" ..." if len(f.samples) > 12 else "")
    who = f"sample{'s' if len(f.samples) > 1 else ''} {shown}" if f.samples else "the batch"
    if f.leaf == "<input>" or (f.input_rows and f.module == "<input>"):
        rows = f.input_rows or f.samples
        paths = ", ".join(f.input_paths) or "the batch"
        return ("nonfinite_input",
                f"batch {f.batch_index} already carries {f.kind.upper() if f.kind == 'nan' else 'Inf'} values "
                f"(rows {', '.join(map(str, rows[:12]))}) before any layer runs.",
                f"rows {', '.join(map(str, rows[:12]))} of batch {f.batch_index} have non-finite values in {paths}: "
                "clean or drop them in the data pipeline (check the loader/feature code, e.g. "
                "torch.nan_to_num or filtering), and assert finiteness of inputs before the model")
    if f.bad_params and (f.leaf in f.bad_params or (f.leaf is None and not f.op)):
        names = ", ".join(f.bad_params[:6])
        return ("nonfinite_parameter",
                f"parameter(s) {names} are already non-finite, so every forward through them is.",
                f"{names} hold NaN/Inf: reload the last finite checkpoint and find the update that broke them "
                "(lower the learning rate, clip gradients, check the loss for NaN before optimizer.step(), or use "
                "nanprobe's monitor)")
    masked = {s: m for s, m in f.masked.items() if not f.samples or s in f.samples}
    attn_op = any(k in (f.op or "") for k in ("attention", "softmax", "transformer_encoder", "scaled_dot"))
    if masked and (attn_op or "Attention" in f.module_type or "Transformer" in f.module_type):
        users = sorted(masked)
        positions = sorted({p for m in masked.values() for p in m["positions"]})
        modules = sorted({x for m in masked.values() for x in m["modules"]})
        names = ", ".join(map(str, users[:12])) + (" ..." if len(users) > 12 else "")
        per_sample = {s: ranges(m["positions"]) for s, m in masked.items()}
        if len(set(per_sample.values())) == 1:
            where = f"samples {names} have no key to attend to at positions {ranges(positions)}"
        else:
            shown = [f"{s} (positions {per_sample[s]})" for s in users[:6]]
            where = f"samples {', '.join(shown)}{' ...' if len(users) > 6 else ''} have no key to attend to"
        if len(users) == 1:
            where = where.replace("samples ", "sample ", 1).replace(" have no key", " has no key")
        return ("fully_masked_attention",
                f"samples {names} have query positions with every key masked in {', '.join(modules) or f.module}; "
                f"softmax over nothing gives NaN ({f.op or 'attention'}).",
                f"{where} ({', '.join(m or '<root>' for m in modules)}): drop key_padding_mask for left-padded "
                "causal attention, or unmask one key per query (e.g. its own position), or drop all-padding "
                "sequences from the batch")
    overflow = _fixed(f, "upcast") or _fixed(f, "upcast64")
    if _fixed(f, "dropout") and not (overflow and f.kind == "inf"):
        sites = ", ".join(f.dropout_sites[:6])
        cfg = f" Note: {f.dropout_config[0]}" if f.dropout_config else ""
        return ("dropout_dependent",
                f"the non-finite value appears only with dropout active ({sites}); with p=0 and the same RNG the "
                f"output is finite. It is produced by {_where(f)}.{cfg}",
                f"{_where(f)} breaks when dropout zeroes its input (e.g. it divides by a count or norm that dropout "
                f"can make 0): guard it (clamp the denominator, add eps) or normalise before dropout; and check the "
                f"dropout p actually configured{(' — ' + f.dropout_config[0]) if f.dropout_config else ''}")
    if f.rebatch_fixed or f.composition or (base in _BATCH_STAT_OPS and f.batch_size == 1):
        how = f.rebatch_fixed or ("the failing samples are finite on their own; the batch as a whole is not"
                                  if f.composition else f"batch of {f.batch_size}")
        return ("batch_size_dependent",
                f"{_where(f)} goes non-finite only for this batch composition/size ({how}).",
                f"{_where(f)} depends on batch statistics: avoid batches of one (DataLoader(drop_last=True)), "
                "use running statistics or a per-sample normalisation (LayerNorm/GroupNorm), and add eps to "
                "std/var denominators (unbiased std of one sample is NaN)")
    overflowing = f.kind == "inf" and base in _OVERFLOW_OPS and base not in ("pow", "var", "std")
    domain = base in _STRICT_DOMAIN
    forward_big = f.phase == "forward" and (overflowing or overflow) and not domain
    backward_big = f.phase == "backward" and not domain and base in _OVERFLOW_OPS and (overflow or f.kind == "inf")
    if forward_big or backward_big:
        limit = ""
        if f.dtype in ("float16", "bfloat16", "float32"):
            limit = f" (max {torch.finfo(getattr(torch, f.dtype)).max:.6g})"
        if f.dtype in ("float16", "bfloat16"):
            fix = (f"keep {_where(f)} in float32 (exclude it from autocast or call .float() on its inputs), or "
                   f"rescale it (subtract the max before exp, scale logits, smaller init) so values stay within "
                   f"{f.dtype}{limit}")
        else:
            fix = (f"values at {_where(f)} grow past {f.dtype or 'the dtype'}{limit}: rescale them (normalise "
                   "inputs, subtract the max before exp, clip or lower the learning rate if weights/gradients "
                   "explode), or compute this part in float64")
        return ("dtype_overflow",
                f"{_where(f)} exceeds the range of {f.dtype or 'its dtype'}{limit}"
                f"{'; upcast, the same computation is finite' if overflow else ' (finite inputs, infinite output)'}.",
                fix)
    if f.phase == "backward":
        what = DOMAIN_OPS.get(base, "a point where its derivative is infinite")
        fix = _BACKWARD_FIX.get(base, f"the gradient of {f.op} is not finite at these inputs: keep its input "
                                      "away from the singular point (clamp / add eps)")
        if any(item.get("op", "").rstrip("_") == (f.op or "").rstrip("_") for item in f.latent):
            fix += (f"; note {f.op} also produced a non-finite value in the forward that was masked out "
                    "(torch.where / masking does not stop the NaN gradient of the masked branch: make the input "
                    "safe before the op)")
        return ("numerical_domain",
                f"the backward of {_where(f)} is non-finite although the gradient it received was finite "
                f"({what}; its derivative blows up there).", fix)
    if domain or (base in DOMAIN_OPS and base not in ("exp", "cosh", "sinh")):
        what = DOMAIN_OPS[base]
        note = (f" (in {f.dtype} the input underflowed to the edge of the domain: upcast, it is finite)"
                if overflow else "")
        generic = (f"keep the input of {_where(f)} inside the domain: clamp it (x.clamp_min(eps)), add an epsilon, "
                   "or use a stable form (log_softmax / logsumexp / F.logsigmoid / torch.special.xlogy / a safe "
                   "division)")
        fix = _DOMAIN_FIX[base].format(where=_where(f), who=who) if base in _DOMAIN_FIX else generic
        return ("numerical_domain", f"{_where(f)} was called outside its domain ({what}) for {who}{note}.", fix)
    flips = [k for k in ("mode", "fastpath", "grad", "sdpa", "autocast") if _fixed(f, k)]
    if flips:
        labels = {"mode": "the train/eval mode", "fastpath": "the MHA fast path", "grad": "grad mode",
                  "sdpa": "the SDPA backend", "autocast": "autocast"}
        which = ", ".join(labels[k] for k in flips)
        return ("mode_dependent",
                f"{_where(f)} goes non-finite only under the original {which}; flipping it gives a finite output.",
                f"the failing code path is selected by {which}: run the affected module in the mode that works, "
                f"or report the kernel ({f.op or f.module_type}) with this repro; meanwhile check the inputs of "
                f"{f.module or '<root>'} for {who}")
    return ("unknown",
            f"{_where(f)} produced the first {f.kind.upper() if f.kind == 'nan' else 'Inf'}; no replay changed it.",
            f"inspect {_where(f)} for {who}: none of the replays (mode, dropout, dtype, fast path, samples) "
            "explained it; use the saved repro to bisect the module's computation")
