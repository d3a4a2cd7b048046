"""``assert_stable``: one call that runs a model on the inputs that usually break it (train and eval, a batch
of one, an all-padding sample, zero-variance inputs, reduced-precision autocast) and says which one did."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nanprobe.batches import batch_size, map_tensors, select_samples
from nanprobe.errors import NonFiniteError
from nanprobe.execution import execute, parse_mode
from nanprobe.report import FirstNonfinite, Report
from nanprobe.rng import RNGState, forked_rng
from nanprobe.testing.failures import _KIND_WORD, describe_origin, find_origin

__all__ = ["BUILTIN_VARIANTS", "StabilityReport", "Variant", "VariantResult", "assert_stable"]

Transform = Callable[[Any], Any]  # batch -> batch, or None when the variant does not apply


@dataclass(frozen=True)
class Variant:
    """A way to perturb a run: ``transform`` changes the batch (None: not applicable), ``context`` wraps it."""

    name: str
    label: str
    transform: Transform | None = None
    context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
    skip_reason: str = ""


@dataclass
class VariantResult:
    """How one (mode, variant) run went."""

    variant: str
    label: str
    mode: str
    status: str  # "ok" | "nonfinite" | "error" | "skipped"
    where: str = ""  # "output" | "gradients"
    kind: str | None = None
    samples: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    error: str = ""
    note: str = ""
    first_nonfinite: FirstNonfinite | None = None
    diagnosis: Report | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.mode}/{self.variant}"

    @property
    def failed(self) -> bool:
        return self.status in ("nonfinite", "error")

    def describe(self) -> str:
        head = f"{self.mode} / {self.label}"
        if self.status == "nonfinite":
            text = f"{head}: {_KIND_WORD.get(self.kind or 'nan', self.kind)} in {self.where}"
            text += f" samples {self.samples}" if self.where == "output" else f" {', '.join(self.paths[:6])}"
        elif self.status == "error":
            text = f"{head}: raised {self.error}"
        else:
            text = f"{head}: {self.status}" + (f" ({self.note})" if self.note else "")
            return text
        if self.first_nonfinite:
            text += f"\n      origin: {describe_origin(self.first_nonfinite)}"
            verdict = getattr(self.diagnosis, "verdict", None)
            if verdict and verdict.get("cause"):
                text += f"\n      cause: {verdict['cause']}: {verdict.get('summary', '')}".rstrip(": ")
        elif self.note:
            text += f"\n      {self.note}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "variant": self.variant, "label": self.label, "mode": self.mode,
                "status": self.status, "where": self.where, "kind": self.kind, "samples": list(self.samples),
                "paths": list(self.paths), "error": self.error, "note": self.note,
                "first_nonfinite": self.first_nonfinite.to_dict() if self.first_nonfinite is not None else None}


@dataclass
class StabilityReport:
    """Every run :func:`assert_stable` made, in order."""

    model: str
    results: list[VariantResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[VariantResult]:
        return [r for r in self.results if r.failed]

    def result(self, name: str) -> VariantResult:
        """The result named ``"mode/variant"`` (e.g. ``"eval/padding"``)."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def summary(self) -> str:
        ran = [r for r in self.results if r.status != "skipped"]
        failed = self.failures
        lines = [f"assert_stable({self.model}): {len(failed)} of {len(ran)} runs failed" if failed
                 else f"assert_stable({self.model}): all {len(ran)} runs finite"]
        lines += [f"  {r.describe()}" for r in (failed or self.results)]
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "passed": self.passed, "results": [r.to_dict() for r in self.results]}

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([r.to_dict() for r in self.results])


# -- built-in variants --------------------------------------------------------------------------------
def _base() -> Variant:
    return Variant("base", "the batch as given", transform=lambda b: b)


def _batch_of_one() -> Variant:
    return Variant("batch_size_1", "batch size 1 (row 0)", transform=lambda b: select_samples(b, [0]))


def _padding(padding_id: int | None) -> Variant:
    if padding_id is None:
        return Variant("padding", "an all-padding sample",
                       skip_reason="no padding id given and no nn.Embedding with padding_idx in the model")

    def pad(batch: Any) -> Any:
        size = batch_size(batch)
        if size is None:
            return None
        candidates: list[torch.Tensor] = []

        def find(t: torch.Tensor) -> torch.Tensor:
            if t.dim() >= 2 and t.shape[0] == size and not (t.is_floating_point() or t.is_complex()) \
                    and t.dtype != torch.bool:
                candidates.append(t)
            return t

        map_tensors(batch, find)
        # sequences are the integer (B, L, ...) tensors that already hold padding (others, e.g. candidate
        # ids, are left alone); when none does, every integer (B, L, ...) tensor is padded
        holding = {id(t) for t in candidates if bool((t == padding_id).any())}
        chosen = holding or {id(t) for t in candidates}
        if not chosen:
            return None

        def fill(t: torch.Tensor) -> torch.Tensor:
            if id(t) in chosen:
                t = t.clone()
                t[size - 1] = padding_id
            return t

        return map_tensors(batch, fill)

    return Variant("padding", f"an all-padding sample (last row set to padding id {padding_id})", transform=pad)


def _zero_variance() -> Variant:
    def flatten(batch: Any) -> Any:
        size = batch_size(batch)
        touched = []

        def const(t: torch.Tensor) -> torch.Tensor:
            if t.is_floating_point() and t.dim() >= 1 and t.shape[0] == size and t[0].numel() > 1:
                touched.append(t)
                dims = tuple(range(1, t.dim()))
                return t.mean(dim=dims, keepdim=True).expand_as(t).clone() if dims else t
            return t

        out = map_tensors(batch, const)
        return out if touched else None

    return Variant("zero_variance", "zero-variance inputs (every floating input row set to its mean)",
                   transform=flatten)


def _autocast(device_type: str) -> Variant:
    dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    name = str(dtype).replace("torch.", "")
    return Variant("autocast", f"{name} autocast on {device_type}", transform=lambda b: b,
                   context=lambda: torch.autocast(device_type=device_type, dtype=dtype))


BUILTIN_VARIANTS = ("base", "batch_size_1", "padding", "zero_variance", "autocast")


def _detect_padding_id(model: nn.Module) -> int | None:
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            return int(module.padding_idx)
    return None


def _device_type(model: nn.Module) -> str:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device.type
    return "cpu"


def _resolve(variants: Sequence[str | Variant] | None, model: nn.Module, padding_id: int | None) -> list[Variant]:
    pad = padding_id if padding_id is not None else _detect_padding_id(model)
    factories: dict[str, Callable[[], Variant]] = {
        "base": _base, "batch_size_1": _batch_of_one, "padding": lambda: _padding(pad),
        "zero_variance": _zero_variance, "autocast": lambda: _autocast(_device_type(model)),
    }
    chosen: list[Variant] = []
    for item in variants if variants is not None else BUILTIN_VARIANTS:
        if isinstance(item, Variant):
            chosen.append(item)
        elif item in factories:
            chosen.append(factories[item]())
        else:
            raise ValueError(f"unknown variant {item!r}; built in: {list(BUILTIN_VARIANTS)} (or pass a Variant)")
    return chosen


# -- the check ------------------------------------------------------------------------------------------
def assert_stable(
    model: nn.Module,
    make_batch: Callable[[], Any] | Any,
    *,
    padding_id: int | None = None,
    backward: bool = True,
    variants: Sequence[str | Variant] | None = None,
    modes: Sequence[str] = ("train", "eval"),
    seed: int | None = 0,
    localize_failures: bool = True,
    raise_on_failure: bool = True,
) -> StabilityReport:
    """Run ``model`` on ``make_batch()`` (or a batch) under every variant in every mode and check that
    outputs (and, in train mode with ``backward``, gradients) stay finite.

    ``eval`` runs under ``torch.no_grad()`` (where native fast paths apply); ``train`` runs with grad and
    backward. Each run starts from the same RNG (``seed``) and the model is restored after each. Raises
    :class:`NonFiniteError` (a NaN/Inf) or :class:`AssertionError` (a run raised) naming every failed
    ``mode / variant`` with the origin module, unless ``raise_on_failure`` is False."""
    __tracebackhide__ = True  # a failure points at the test's call, not at nanprobe's source
    batch = make_batch() if callable(make_batch) else make_batch
    report = StabilityReport(model=type(model).__name__)
    with forked_rng():
        if seed is not None:
            torch.manual_seed(seed)
        rng = RNGState.capture()
    localized = 0
    for variant in _resolve(variants, model, padding_id):
        varied = None if variant.skip_reason or variant.transform is None else variant.transform(batch)
        for mode in modes:
            if varied is None:
                report.results.append(VariantResult(variant.name, variant.label, mode, "skipped",
                                                    note=variant.skip_reason or "no input it applies to"))
                continue
            result = _run_one(model, varied, variant, mode, backward=backward and mode == "train", rng=rng)
            if result.status == "nonfinite" and localize_failures and localized < 4:
                localized += 1
                with variant.context() if variant.context else contextlib.nullcontext():
                    first, result.diagnosis, result.note = find_origin(
                        model, varied, mode=mode, backward=result.where == "gradients", rng=rng)
                result.first_nonfinite = first
            report.results.append(result)
    if raise_on_failure and report.failures:
        _raise(report)
    return report


def _run_one(model: nn.Module, batch: Any, variant: Variant, mode: str, *, backward: bool,
             rng: RNGState) -> VariantResult:
    result = VariantResult(variant.name, variant.label, mode, "ok")
    try:
        with variant.context() if variant.context else contextlib.nullcontext():
            run = execute(model, batch, mode=parse_mode(mode), backward=backward, rng=rng)
    except Exception as exc:
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}"
        return result
    if run.output.nonfinite:
        result.status, result.where, result.kind = "nonfinite", "output", run.output.kind
        result.samples, result.paths = list(run.output.samples), list(run.output.paths)
    elif run.gradients is not None and run.gradients.nonfinite:
        result.status, result.where, result.kind = "nonfinite", "gradients", run.gradients.kind
        result.paths = list(run.gradients.paths)
    return result


def _raise(report: StabilityReport) -> None:
    __tracebackhide__ = True
    message = report.summary()
    nonfinite = [r for r in report.failures if r.status == "nonfinite"]
    err: Exception
    err = NonFiniteError(message, diagnosis=nonfinite[0].diagnosis) if nonfinite else AssertionError(message)
    err.report = report  # type: ignore[attr-defined]
    raise err
