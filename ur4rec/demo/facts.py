"""The facts the demo promises, checked against what actually ran (never assumed)."""

from __future__ import annotations

from typing import Any

from .results import EvalOutcome, Fact, TraceOutcome, TrainOutcome
from .steps import padded_rows

__all__ = ["eval_facts", "fixed_facts", "trace_facts", "train_facts"]


def _short(values: list[int], n: int = 8) -> str:
    head = ", ".join(str(v) for v in values[:n])
    return head + (f", ... ({len(values)})" if len(values) > n else "")


def train_facts(t: TrainOutcome) -> list[Fact]:
    return [
        Fact("training stays finite", t.finite_loss, f"mean loss at each validation {[round(v, 3) for v in t.losses]}"),
        Fact("sasrec_dropout never reached the model", t.model_dropout != t.config_dropout,
             f"config {t.config_dropout}, model {t.model_dropout}"),
    ]


def eval_facts(e: EvalOutcome, dropout_only_nonfinite: int) -> list[Fact]:
    r = e.result
    cause = ((e.bundle_report or {}).get("verdict") or {}).get("cause")
    return [
        Fact("eval at batch 64 is non-finite", r.nonfinite_samples > 0,
             f"{r.nonfinite_batches} / {r.num_batches} batches, {r.nonfinite_samples} / {r.num_samples} samples"),
        Fact("the non-finite users are exactly the left-padded ones", r.nonfinite_user_ids == e.padded_users,
             f"{r.nonfinite_samples} non-finite users, {len(e.padded_users)} with history < max_seq_len="
             f"{e.max_seq_len}"),
        Fact("the monitor left a bundle", len(e.bundles) == 1 and cause == "fully_masked_attention",
             f"{e.bundles[0] if e.bundles else 'none'} (diagnosed at the failing step: {cause})"),
        Fact("the original team's fix alone (dropout 0.0 reaching the model) changes nothing",
             dropout_only_nonfinite == r.nonfinite_samples,
             f"{dropout_only_nonfinite} non-finite samples with the same weights built from the config"),
    ]


def _replay(report: dict[str, Any], key: str, value: Any) -> dict[str, Any] | None:
    for row in report.get("replay") or []:
        if (row.get("changes") or {}).get(key, object()) == value:
            return row
    return None


def trace_facts(t: TraceOutcome) -> list[Fact]:
    r = t.report
    first, verdict = r.get("first_nonfinite") or {}, r.get("verdict") or {}
    samples = list(first.get("samples") or [])
    facts = [
        Fact("verdict", verdict.get("cause") == "fully_masked_attention", str(verdict.get("cause"))),
        Fact("origin", str(first.get("module", "")).startswith("sasrec.blocks.")
             and first.get("module_type") == "MultiheadAttention",
             f"{first.get('module')} ({first.get('module_type')}, {first.get('op')})"),
    ]
    for label, key, value, nonfinite in (("dropout p=0 changes nothing", "dropout_p", 0.0, True),
                                         ("train mode removes it", "mode", "train", False),
                                         ("fast path off removes it", "mha_fastpath", False, False)):
        row = _replay(r, key, value)
        same = row is not None and bool(row.get("nonfinite")) == nonfinite
        if row is not None and nonfinite:
            same = same and list(row.get("samples") or []) == samples
        detail = "not replayed" if row is None else (
            f"{row['variant']} -> {'still non-finite, same samples' if row.get('nonfinite') else 'finite'}")
        facts.append(Fact(label, same, detail))
    padded = padded_rows(t.batch) if t.batch is not None else []
    details = {d.get("sample"): d for d in r.get("sample_details") or []}
    positions_ok = all(
        list(d.get("masked_positions") or []) == list(range(int((t.batch["input_ids"][s] == 0).sum())))
        for s, d in details.items() if t.batch is not None and isinstance(s, int)
    )
    facts.append(Fact("failing samples = queries that attend only to padding",
                      bool(samples) and samples == padded and positions_ok and bool(details),
                      f"batch {first.get('batch_index')}: failing rows [{_short(samples)}] = left-padded rows "
                      f"[{_short(padded)}]; masked query positions = padding positions for {len(details)} "
                      "detailed sample(s)"))
    flagged = [f for f in r.get("config_audit") or [] if f.get("reached") is False]
    drop = next((f for f in flagged if str(f.get("key", "")).endswith("sasrec_dropout")), None)
    facts.append(Fact("config audit flags sasrec_dropout (a real but separate bug)",
                      drop is not None and float(drop["config_value"]) == 0.0 and float(drop["model_value"]) == 0.1
                      and verdict.get("cause") != "dropout_dependent",
                      "not flagged" if drop is None else
                      f"config {drop['config_value']}, model {drop['model_value']}; verdict stays "
                      f"{verdict.get('cause')}"))
    return facts


def fixed_facts(t: TrainOutcome, e: EvalOutcome) -> list[Fact]:
    r, base = e.result, e.result.baseline
    beats = base is not None and all(r.metrics[m] > base.metrics[m] for m in ("hit@5", "ndcg@5"))
    return [
        Fact("fixed model: built from the config", t.config_driven and t.model_dropout == t.config_dropout
             and t.mask_style == "safe",
             f"attention_mask_style={t.mask_style}, sasrec_dropout {t.model_dropout} (config "
             f"{t.config_dropout})"),
        Fact("fixed model: every score finite, no bundle", r.finite and not e.bundles,
             f"{r.nonfinite_samples} non-finite of {r.num_samples}; {len(e.bundles)} bundle(s)"),
        Fact("fixed model beats most-popular on hit@5 and ndcg@5", beats,
             "" if base is None else f"hit@5 {r.metrics['hit@5']:.4f} vs {base.metrics['hit@5']:.4f}, "
             f"ndcg@5 {r.metrics['ndcg@5']:.4f} vs {base.metrics['ndcg@5']:.4f}"),
    ]
