"""The verdict: every cause in the contract is a candidate that collects evidence for and against it from the
facts (what was measured at the producing op, which replays flipped, what bisection proved), and the
best-supported one wins (:mod:`nanprobe.diagnosis.evidence`). What makes an op non-finite, and the fix for
it, comes from the knowledge table (:mod:`nanprobe.knowledge`), not from rules here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from nanprobe.diagnosis.dynamics import BrokenStep, Divergence
from nanprobe.diagnosis.evidence import DIRECT, MEASURED, OP_FACT, PRIOR, REPLAY, Candidate, choose
from nanprobe.diagnosis.optimizer import OptimizerFinding
from nanprobe.diagnosis.samples import ranges
from nanprobe.knowledge import Condition, Entry, Evidence
from nanprobe.report import INPUT, Root, Verdict, display_name

__all__ = ["Facts", "Measured", "decide", "divergence_candidate", "divergence_root"]

_FLIPS = {"mode": "the train/eval mode", "fastpath": "the MHA fast path", "grad": "grad mode",
          "sdpa": "the SDPA backend", "autocast": "autocast"}
_ATTENTION_WORDS = ("attention", "softmax", "transformer_encoder", "scaled_dot")
_HALF = ("float16", "bfloat16")


@dataclass(frozen=True)
class Measured:
    """A table condition that held on the producing op's actual inputs."""

    entry: str
    condition: Condition
    evidence: Evidence


@dataclass
class Facts:
    """Everything the candidates look at."""

    kind: str = "nan"
    phase: str = "forward"
    batch_index: int = 0
    batch_size: int = 0
    module: str = ""
    module_type: str = ""
    op: str | None = None
    source: str | None = None
    samples: list[int] = field(default_factory=list)
    leaf: str | None = None  # "<input>" or a parameter name, when the chain starts outside any op
    leaf_unknown: bool = False  # the producing op's input was already non-finite, made outside any op seen
    input_rows: list[int] = field(default_factory=list)
    input_paths: list[str] = field(default_factory=list)
    bad_params: list[str] = field(default_factory=list)
    bad_param_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    bad_buffers: set[str] = field(default_factory=set)  # which of bad_params are buffers
    nonfinite_input_shapes: list[tuple[int, ...]] = field(default_factory=list)  # of the producing op
    masked: dict[int, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, bool] = field(default_factory=dict)  # replay key -> still non-finite
    evidence: list[str] = field(default_factory=list)
    hooks_changed: bool = False
    dtype: str | None = None
    dropout_sites: list[str] = field(default_factory=list)
    dropout_config: list[str] = field(default_factory=list)
    composition: bool = False  # the failing samples are finite on their own; the batch is not
    singles_tried: bool = False  # bisection ran single samples
    rebatch_fixed: str | None = None
    extra_notes: list[str] = field(default_factory=list)
    config_notes: list[str] = field(default_factory=list)
    latent: list[Any] = field(default_factory=list)
    entry: Entry | None = None  # the knowledge table's entry for the producing op (or its loss)
    measured: list[Measured] = field(default_factory=list)
    input_absmax: float | None = None  # the producing op's largest finite |input|
    root: Root | None = None
    divergence: Divergence | None = None  # what the run's history shows (monitor bundles, replays of them)
    optimizer: list[OptimizerFinding] = field(default_factory=list)  # what the optimizer's step does to bad_params
    broken: BrokenStep | None = None  # the run's first step whose optimizer.step() wrote NaN/Inf (its history)
    optimizer_state: list[str] = field(default_factory=list)  # bad_params' optimizer state that is non-finite

    @property
    def optimizer_step(self) -> OptimizerFinding | None:
        """The optimizer condition that explains the first non-finite parameter, if one does."""
        return next((o for o in self.optimizer if o.parameter in self.bad_params), None)


def _fixed(f: Facts, key: str) -> bool:
    return key in f.results and not f.results[key]


def _where(f: Facts) -> str:
    place = f"{f.op} in {display_name(f.module)}" if f.op else display_name(f.module)
    return f"{place} ({f.source})" if f.source else place


def _who(f: Facts) -> str:
    if not f.samples:
        return "the batch"
    shown = ", ".join(map(str, f.samples[:12])) + (" ..." if len(f.samples) > 12 else "")
    return f"sample{'s' if len(f.samples) > 1 else ''} {shown}"


def _limit(f: Facts) -> tuple[str, float | None]:
    if f.dtype in ("float16", "bfloat16", "float32", "float64"):
        big = float(torch.finfo(getattr(torch, f.dtype)).max)
        return f" (max {big:.6g})", big
    return "", None


# -- the candidates ------------------------------------------------------------------------------------
def _input(f: Facts) -> Candidate:
    c = Candidate("nonfinite_input")
    if f.leaf == INPUT or (f.input_rows and f.module == INPUT):
        rows = ", ".join(map(str, (f.input_rows or f.samples)[:12]))
        paths = ", ".join(f.input_paths) or "the batch"
        c.add(DIRECT, f"batch {f.batch_index} carries {f.kind.upper() if f.kind == 'nan' else 'Inf'} in rows "
                      f"{rows} ({paths}) before any layer runs")
        c.summary = (f"batch {f.batch_index} already carries {f.kind.upper() if f.kind == 'nan' else 'Inf'} "
                     f"values (rows {rows}) before any layer runs.")
        c.fix = (f"rows {rows} of batch {f.batch_index} have non-finite values in {paths}: clean or drop them in "
                 "the data pipeline (check the loader/feature code, e.g. torch.nan_to_num or filtering), and assert "
                 "finiteness of inputs before the model")
    return c


def _parameter(f: Facts) -> Candidate:
    c = Candidate("nonfinite_parameter")
    if not f.bad_params:
        return c
    names = ", ".join(f.bad_params[:6])
    if f.leaf in f.bad_params:
        c.add(DIRECT, f"{f.leaf} is already non-finite and the value flows from it to the output")
    elif f.leaf is None and not f.op:
        c.add(DIRECT, f"{names} already non-finite")
    elif f.leaf_unknown:
        shapes = {tuple(s) for s in f.nonfinite_input_shapes}
        same = [n for n, s in f.bad_param_shapes.items() if s in shapes or tuple(reversed(s)) in shapes]
        if same:
            c.add(DIRECT - 5, f"{f.op} read a non-finite copy of {same[0]} (same shape; e.g. autocast's cast "
                              "weight), which is already non-finite")
        else:
            c.add(OP_FACT, f"{f.op}'s input was already non-finite when it ran, and {names} hold NaN/Inf")
    else:
        c.add(PRIOR, f"{names} hold NaN/Inf, though the failing value was produced elsewhere")
        c.oppose(OP_FACT, f"the value reaching the output was produced by {f.op} from finite inputs")
    buffers = [n for n in f.bad_params if n in f.bad_buffers]
    what = ("buffer(s)" if len(buffers) == len(f.bad_params) else
            "parameter(s)" if not buffers else "parameter(s)/buffer(s)")
    c.summary = f"{what} {names} are already non-finite, so every forward through them is."
    c.fix = (f"{names} hold NaN/Inf: reload the last finite checkpoint and find the update that broke them (lower "
             "the learning rate, clip gradients, check the loss for NaN before optimizer.step(), or use nanprobe's "
             "monitor)")
    step = f.optimizer_step
    if f.broken is not None:
        c.add(MEASURED, f.broken.describe())
        if step is None:
            c.summary += f" They were written by the optimizer step of step {f.broken.step}."
    if step is not None:
        when = f" (step {f.broken.step})" if f.broken is not None else ""
        c.add(MEASURED, f"{step.optimizer}.step() made {step.parameter} non-finite: {step.evidence.text}")
        c.summary += f" {step.optimizer}'s step{when} made them so: {step.evidence.text.split(';')[0]}."
        c.fix = f"{step.condition.fix_text(where=step.where())}; then reload the last finite checkpoint"
    if f.optimizer_state:
        shown = "; ".join(f.optimizer_state[:3]) + ("; ..." if len(f.optimizer_state) > 3 else "")
        c.add(MEASURED, f"the optimizer's state is non-finite too: {shown}")
        c.fix += ("; the optimizer's state is non-finite too: reload it together with the weights (or create the "
                  "optimizer anew), or the first step after resuming writes its NaN back into them")
    if buffers:
        c.fix += ("; a buffer such as BatchNorm's running_var is updated by training forwards, not by the "
                  "optimizer: recompute it (reset_running_stats() and a few train-mode passes)")
    return c


def _masked_attention(f: Facts) -> Candidate:
    c = Candidate("fully_masked_attention")
    masked = {s: m for s, m in f.masked.items() if not f.samples or s in f.samples}
    attn = any(k in (f.op or "") for k in _ATTENTION_WORDS) or "Attention" in f.module_type \
        or "Transformer" in f.module_type
    if not masked or not attn:
        return c
    users = sorted(masked)
    positions = sorted({p for m in masked.values() for p in m["positions"]})
    modules = sorted({x for m in masked.values() for x in m["modules"]})
    names = ", ".join(map(str, users[:12])) + (" ..." if len(users) > 12 else "")
    c.add(MEASURED, f"the masks leave samples {names} with query positions that attend to no key")
    per_sample = {s: ranges(m["positions"]) for s, m in masked.items()}
    if len(set(per_sample.values())) == 1:
        where = f"samples {names} have no key to attend to at positions {ranges(positions)}"
    else:
        shown = [f"{s} (positions {per_sample[s]})" for s in users[:6]]
        where = f"samples {', '.join(shown)}{' ...' if len(users) > 6 else ''} have no key to attend to"
    if len(users) == 1:
        where = where.replace("samples ", "sample ", 1).replace(" have no key", " has no key")
    c.summary = (f"samples {names} have query positions with every key masked in {', '.join(modules) or f.module}; "
                 f"softmax over nothing gives NaN ({f.op or 'attention'}).")
    c.fix = (f"{where} ({', '.join(display_name(m) for m in modules)}): drop key_padding_mask for left-padded causal "
             "attention, or unmask one key per query (e.g. its own position), or drop all-padding sequences from "
             "the batch")
    return c


def _by_table(f: Facts, cause: str) -> Candidate:
    """dtype_overflow and numerical_domain: measured conditions first, then what the table says of the op."""
    c = Candidate(cause)
    hits = [m for m in f.measured if m.condition.cause == cause]
    for m in hits:
        c.add(MEASURED, f"{m.condition.when}: {m.evidence.text}")
    known = [cond for cond in (f.entry.conditions_for(f.phase) if f.entry else ()) if cond.cause == cause]
    if known and not hits:
        c.add(PRIOR, f"{f.entry.name if f.entry else f.op} is known to go non-finite when {known[0].when}")
    chosen = hits[0].condition if hits else (known[0] if known else None)
    if chosen is not None:
        c.fix = chosen.fix_text(where=_where(f), who=_who(f))
    return c


def _overflow(f: Facts) -> Candidate:
    c = _by_table(f, "dtype_overflow")
    text, big = _limit(f)
    if f.kind == "inf" and big is not None and f.input_absmax is not None and f.input_absmax > big ** 0.5:
        c.add(OP_FACT, f"{f.op or f.module_type} made Inf from finite inputs reaching |max| {f.input_absmax:.3g}, "
                       f"whose squares exceed {f.dtype}{text}")
    upcast = [k for k in ("upcast", "upcast64") if k in f.results]
    if any(_fixed(f, k) for k in upcast):
        c.add(REPLAY, "upcast, the same computation is finite")
    elif upcast:
        c.oppose(REPLAY, "upcast, it is still non-finite: not a matter of the dtype's range")
    if f.root is not None and f.root.evidence:
        c.add(OP_FACT if c.strength < OP_FACT else c.strength, f"the values exploded upstream: {f.root.evidence}")
    if f.dtype in _HALF:
        c.fix = c.fix or (f"keep {_where(f)} in float32 (exclude it from autocast or call .float() on its inputs), or "
                          f"rescale it (subtract the max before exp, scale logits, smaller init) so values stay "
                          f"within {f.dtype}{text}")
    c.fix = c.fix or (f"values at {_where(f)} grow past {f.dtype or 'the dtype'}{text}: rescale them (normalise "
                      "inputs, subtract the max before exp, clip or lower the learning rate if weights/gradients "
                      "explode), or compute this part in float64")
    if big is not None and f"{big:.6g}" not in c.fix:
        c.fix += f" ({f.dtype}{text})"
    if f.root is not None and f.root.module:
        c.fix += f"; the explosion starts at {display_name(f.root.module)}" + (
            f" ({f.root.parameter} stands out from its peers: reinitialise or rescale it)" if f.root.parameter else "")
    c.summary = (f"{_where(f)} exceeds the range of {f.dtype or 'its dtype'}{text}"
                 f"{'; upcast, the same computation is finite' if any(_fixed(f, k) for k in upcast) else ''}.")
    return c


def _domain(f: Facts) -> Candidate:
    c = _by_table(f, "numerical_domain")
    measured_domain = any(m.condition.cause == "numerical_domain" for m in f.measured)
    if not measured_domain and any(_fixed(f, k) for k in ("upcast", "upcast64")):
        c.oppose(REPLAY - 10, "upcast, the same computation is finite (a domain error persists in float64)")
    if not c.fix:
        c.fix = (f"keep the input of {_where(f)} inside the domain: clamp it (x.clamp_min(eps)), add an epsilon, or "
                 "use a stable form (log_softmax / logsumexp / F.logsigmoid / torch.special.xlogy / a safe division)")
    if f.phase == "backward" and any(item.get("op", "").rstrip("_") == (f.op or "").rstrip("_") for item in f.latent):
        c.fix += (f"; note {f.op} also produced a non-finite value in the forward that was masked out (torch.where "
                  "/ masking does not stop the NaN gradient of the masked branch: make the input safe before the op)")
    what = next((m.condition.when for m in f.measured if m.condition.cause == "numerical_domain"),
                next((cond.when for cond in (f.entry.conditions_for(f.phase) if f.entry else ())
                      if cond.cause == "numerical_domain"), "outside its domain"))
    if f.phase == "backward":
        c.summary = (f"the backward of {_where(f)} is non-finite although the gradient it received was finite "
                     f"({what}).")
    else:
        c.summary = f"{_where(f)} was called outside its domain ({what}) for {_who(f)}."
    return c


def _dropout(f: Facts) -> Candidate:
    c = Candidate("dropout_dependent")
    if _fixed(f, "dropout") and f.measured:
        # dropout changes the values, not the kernel: the measured condition itself exists only with it
        c.add(MEASURED + 5, f"the measured condition ({f.measured[0].condition.when}) occurs only with dropout "
                            "active: dropout p=0 with the same RNG -> finite")
    elif _fixed(f, "dropout"):
        c.add(REPLAY, "dropout p=0 with the same RNG -> finite")
    elif "dropout" in f.results:
        c.oppose(REPLAY, "dropout p=0 -> still non-finite")
    sites = ", ".join(f.dropout_sites[:6])
    cfg = f" Note: {f.dropout_config[0]}" if f.dropout_config else ""
    c.summary = (f"the non-finite value appears only with dropout active ({sites}); with p=0 and the same RNG the "
                 f"output is finite. It is produced by {_where(f)}.{cfg}")
    c.fix = (f"{_where(f)} breaks when dropout zeroes its input (e.g. it divides by a count or norm that dropout can "
             "make 0): guard it (clamp the denominator, add eps) or normalise before dropout; and check the dropout p "
             f"actually configured{(' — ' + f.dropout_config[0]) if f.dropout_config else ''}")
    return c


def _batch_size(f: Facts) -> Candidate:
    c = _by_table(f, "batch_size_dependent")
    if f.composition and f.singles_tried:
        c.add(REPLAY + 5, "the failing samples are finite on their own (single samples tried); the batch is not")
    elif f.rebatch_fixed and f.singles_tried and not f.measured:
        c.add(REPLAY, f"{f.rebatch_fixed}")
    elif f.rebatch_fixed:
        c.add(PRIOR, f"{f.rebatch_fixed} (a different batch composition; single samples not tried)")
    own = [m for m in f.measured if m.condition.cause != "batch_size_dependent" and m.evidence.rows]
    if own:
        c.oppose(MEASURED, f"the failing rows themselves meet a known condition ({own[0].condition.when})")
    how = f.rebatch_fixed or ("the failing samples are finite on their own; the batch as a whole is not"
                              if f.composition else f"batch of {f.batch_size}")
    c.summary = f"{_where(f)} goes non-finite only for this batch composition/size ({how})."
    c.fix = c.fix or (f"{_where(f)} depends on batch statistics: avoid batches of one (DataLoader(drop_last=True)), "
                      "use running statistics or a per-sample normalisation (LayerNorm/GroupNorm), and add eps to "
                      "std/var denominators (unbiased std of one sample is NaN)")
    return c


def _mode(f: Facts) -> Candidate:
    c = Candidate("mode_dependent")
    flips = [k for k in _FLIPS if _fixed(f, k)]
    for k in flips:
        c.add(REPLAY, f"flipping {_FLIPS[k]} -> finite")
    which = ", ".join(_FLIPS[k] for k in flips)
    c.summary = (f"{_where(f)} goes non-finite only under the original {which}; flipping it gives a finite "
                 "output.")
    c.fix = (f"the failing code path is selected by {which}: run the affected module in the mode that works, or "
             f"report the kernel ({f.op or f.module_type}) with this repro; meanwhile check the inputs of "
             f"{display_name(f.module)} for {_who(f)}")
    return c


def divergence_candidate(f: Facts) -> Candidate:
    """The run's history: values that grew exponentially over many steps until they overflowed explain
    a non-finite parameter, an overflow or a LayerNorm NaN better than the last step alone does."""
    c = Candidate("training_divergence")
    div = f.divergence
    if div is None:
        return c
    strength = DIRECT + 5 if div.strength >= 3.0 else MEASURED + 5
    for growth in div.growths:
        c.add(strength, growth.describe())
    for note in div.notes:
        c.add(strength, note)
    if div.loss_scale_falling:
        c.add(MEASURED, "the loss scale kept falling (the scaler skipped overflowing step after step)")
    c.summary = div.summary()
    c.fix = div.fix(f.dtype)
    return c


def divergence_root(div: Divergence) -> Root:
    """``verdict.root`` of a diverged run: the step where growth began, and what grew fastest."""
    root = Root(step=div.onset, evidence="; ".join([div.headline(), *div.notes]))
    if div.fastest:
        if "." in div.fastest and div.fastest.rsplit(".", 1)[-1] in ("weight", "bias"):
            root.parameter = div.fastest
        else:
            root.module = div.fastest
        root.evidence = f"{root.evidence}; {div.fastest_evidence}"
    return root


def _unknown(f: Facts) -> Candidate:
    c = Candidate("unknown").add(1, "no candidate had evidence")
    c.summary = f"{_where(f)} produced the first {f.kind.upper() if f.kind == 'nan' else 'Inf'}; no replay changed it."
    c.fix = (f"inspect {_where(f)} for {_who(f)}: none of the replays (mode, dropout, dtype, fast path, samples) "
             "explained it; use the saved repro to bisect the module's computation")
    return c


_CANDIDATES = (_input, _parameter, _masked_attention, _overflow, _domain, _dropout, _batch_size, _mode,
               divergence_candidate, _unknown)


def decide(f: Facts) -> Verdict:
    """The best-supported cause, its evidence (the facts, the replays, the rejected candidates), the fix and,
    for overflows, where the explosion started (``root``)."""
    winner, rejected = choose([make(f) for make in _CANDIDATES])
    evidence = list(f.evidence)
    if f.hooks_changed:
        fast = "TransformerEncoderLayer" in f.module_type or "transformer_encoder" in (f.op or "")
        evidence.insert(0, "per-module hooks -> non-finite output disappeared"
                           f"{' (TransformerEncoderLayer fast path refused)' if fast else ''}"
                           "; localized with a dispatch mode and global module hooks instead")
    evidence += [f"for {winner.cause}: {text}" for _, text in sorted(winner.support, key=lambda p: -p[0])
                 if winner.cause != "unknown"]
    evidence += rejected + f.extra_notes + [f"config audit: {m}" for m in f.config_notes[:3]]
    root = f.root if winner.cause == "dtype_overflow" else None
    if winner.cause == "training_divergence" and f.divergence is not None:
        root = divergence_root(f.divergence)
    step = f.optimizer_step
    if winner.cause == "nonfinite_parameter" and (step is not None or f.broken is not None):
        root = Root(step=f.broken.step if f.broken is not None else None,
                    parameter=step.parameter if step is not None else None,
                    evidence="; ".join(([f"{step.optimizer}.step(): {step.evidence.text}"] if step else [])
                                       + ([f.broken.describe()] if f.broken is not None else [])))
    return Verdict(cause=winner.cause, summary=winner.summary, evidence=evidence, fix=winner.fix,  # type: ignore[arg-type]
                   root=root)
