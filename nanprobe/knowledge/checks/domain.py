"""Checks for elementwise domain conditions: the values an op's inputs take where it is undefined.

Each looks at finite inputs only (a NaN that arrives is not the op's fault), except the two that are about
infinities meeting (``zero_times_inf``, ``inf_minus_inf``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from nanprobe.knowledge.checks.registry import Evidence, OpCall, check, fmt, rows_where

__all__: list[str] = []

_POW = ("pow", "float_power")
_DIV = ("div", "divide", "true_divide", "fmod", "remainder")
_LOGS = ("log", "log2", "log10", "rsqrt")
_ARC = ("acos", "asin", "atanh")
_XLOGY = ("xlogy", "special_xlogy", "special_xlog1py", "xlog1py")

Mask = Callable[[torch.Tensor], torch.Tensor]
Describe = Callable[[torch.Tensor, torch.Tensor], str]


def as_tensor(value: object) -> torch.Tensor | None:
    """A numeric argument as a tensor (Python scalars included), or None."""
    if isinstance(value, torch.Tensor):
        return None if value.is_complex() else value
    if isinstance(value, (bool,)):
        return None
    if isinstance(value, (int, float)):
        return torch.tensor(float(value), dtype=torch.float64)
    return None


def _first_tensor(call: OpCall) -> torch.Tensor | None:
    """The op's first tensor argument (polygamma(n, x) takes an int first)."""
    for value in call.args:
        if isinstance(value, torch.Tensor):
            return None if value.is_complex() else value
    return as_tensor(call.kwargs.get("self", call.kwargs.get("input")))


def _found(mask: torch.Tensor, text: str) -> Evidence:
    rows, where = rows_where(mask)
    return Evidence(text + where, rows)


def _unary(check_id: str, ops: tuple[str, ...], holds: Mask, describe: Describe) -> None:
    """Register a check on the op's first tensor argument: ``holds`` marks the values meeting the condition."""

    @check(check_id, ops=ops)
    def run(call: OpCall) -> Evidence | None:
        x = _first_tensor(call)
        if x is None or x.numel() == 0:
            return None
        mask = holds(x) & torch.isfinite(x)
        if not bool(mask.any()):
            return None
        return _found(mask, describe(x, mask))

    run.__name__ = check_id


def _count(mask: torch.Tensor) -> str:
    n = int(mask.sum())
    return f"{n} value{'s' if n != 1 else ''}"


_unary("input_nonpositive", _LOGS,
       lambda x: x <= 0, lambda x, m: f"min input {fmt(x[m].min())} <= 0")
_unary("input_negative", ("sqrt",), lambda x: x < 0, lambda x, m: f"min input {fmt(x[m].min())} < 0")
_unary("input_zero", ("sqrt", "reciprocal", *_LOGS),
       lambda x: x == 0, lambda x, m: f"{_count(m)} of the input exactly 0")
_unary("input_at_most_minus_one", ("log1p",), lambda x: x <= -1, lambda x, m: f"min input {fmt(x[m].min())} <= -1")
_unary("input_outside_unit_interval", _ARC, lambda x: x.abs() > 1,
       lambda x, m: f"input {fmt(x[m].abs().max())} in absolute value, outside [-1, 1]")
_unary("input_at_unit_boundary", _ARC, lambda x: x.abs() == 1, lambda x, m: f"{_count(m)} of the input exactly +-1")
_unary("input_outside_open_unit_interval", ("erfinv", "atanh"), lambda x: x.abs() >= 1,
       lambda x, m: f"input {fmt(x[m].abs().max())} in absolute value, outside (-1, 1)")
_unary("input_below_one", ("acosh",), lambda x: x < 1, lambda x, m: f"min input {fmt(x[m].min())} < 1")
_unary("input_at_most_one", ("acosh",), lambda x: x <= 1, lambda x, m: f"min input {fmt(x[m].min())} <= 1")
_unary("nonpositive_integer", ("lgamma", "digamma", "polygamma", "mvlgamma"), lambda x: (x <= 0) & (x == x.round()),
       lambda x, m: f"{_count(m)} of the input at a pole (a non-positive integer, e.g. {fmt(x[m].max())})")


@check("input_outside_open_zero_one", ops=["logit"])
def _logit_domain(call: OpCall) -> Evidence | None:
    """logit(x) without ``eps``: 0 and 1 map to -+inf, values outside [0, 1] to NaN."""
    eps = call.get(1, "eps")
    x = as_tensor(call.get(0, "self"))
    if x is None or (eps is not None and float(eps) > 0):
        return None
    mask = ((x <= 0) | (x >= 1)) & torch.isfinite(x)
    if not bool(mask.any()):
        return None
    return _found(mask, f"{_count(mask)} of the input outside (0, 1) (e.g. {fmt(x[mask][0])}) and no eps")


# ----------------------------------------------------------------------------------------------------- pow
def _pow_operands(call: OpCall) -> tuple[torch.Tensor, torch.Tensor] | None:
    base, exponent = as_tensor(call.get(0, "self")), as_tensor(call.get(1, "exponent"))
    if base is None or exponent is None:
        return None
    b, e = torch.broadcast_tensors(base.double(), exponent.double())
    finite = torch.isfinite(b) & torch.isfinite(e)
    return torch.where(finite, b, torch.ones_like(b)), torch.where(finite, e, torch.ones_like(e))


@check("pow_zero_to_negative", ops=_POW)
def _pow_zero_negative(call: OpCall) -> Evidence | None:
    ops = _pow_operands(call)
    if ops is None:
        return None
    b, e = ops
    mask = (b == 0) & (e < 0)
    if not bool(mask.any()):
        return None
    return _found(mask, f"{_count(mask)} of the base exactly 0 under a negative exponent ({fmt(e[mask].min())})")


@check("pow_negative_to_fractional", ops=_POW)
def _pow_negative_fraction(call: OpCall) -> Evidence | None:
    ops = _pow_operands(call)
    if ops is None:
        return None
    b, e = ops
    mask = (b < 0) & (e != e.round())
    if not bool(mask.any()):
        return None
    return _found(mask, f"negative base {fmt(b[mask].min())} under the fractional exponent {fmt(e[mask][0])}")


@check("pow_zero_below_one", ops=_POW)
def _pow_zero_fraction(call: OpCall) -> Evidence | None:
    """x ** e with 0 < e < 1 at x == 0: finite forward, gradient e * 0 ** (e - 1) = inf."""
    ops = _pow_operands(call)
    if ops is None:
        return None
    b, e = ops
    mask = (b == 0) & (e > 0) & (e < 1)
    if not bool(mask.any()):
        return None
    return _found(mask, f"{_count(mask)} of the base exactly 0 under the exponent {fmt(e[mask][0])} < 1: "
                        "the gradient is infinite there")


# --------------------------------------------------------------------------------------- division-like
def _pair(call: OpCall) -> tuple[torch.Tensor, torch.Tensor] | None:
    a, b = as_tensor(call.get(0, "self")), as_tensor(call.get(1, "other"))
    if a is None or b is None:
        return None
    return torch.broadcast_tensors(a, b)  # type: ignore[return-value]


@check("denominator_zero", ops=_DIV)
def _denominator_zero(call: OpCall) -> Evidence | None:
    pair = _pair(call)
    if pair is None:
        return None
    a, b = pair
    mask = (b == 0) & torch.isfinite(a)
    if not bool(mask.any()):
        return None
    zeros = int(((a == 0) & mask).sum())
    both = f" ({zeros} of them 0/0)" if zeros else ""
    return _found(mask, f"{_count(mask)} of the denominator exactly 0{both}")


@check("zero_over_zero", ops=_DIV)
def _zero_over_zero(call: OpCall) -> Evidence | None:
    pair = _pair(call)
    if pair is None:
        return None
    a, b = pair
    mask = (a == 0) & (b == 0)
    if not bool(mask.any()):
        return None
    return _found(mask, f"{_count(mask)} of 0/0 (numerator and denominator both exactly 0)")


def _log_argument(call: OpCall) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """xlogy(x, y) takes log(y); special_xlog1py(x, y) takes log1p(y) (log of 1 + y)."""
    pair = _pair(call)
    if pair is None:
        return None
    x, y = pair
    if "1p" in call.key:
        return x, y + 1, "1 + y"
    return x, y, "y"


@check("xlogy_y_nonpositive", ops=_XLOGY)
def _xlogy_domain(call: OpCall) -> Evidence | None:
    """x * log(y) where x != 0 and y <= 0: -inf (y == 0) or NaN (y < 0); x == 0 gives 0 by definition."""
    found = _log_argument(call)
    if found is None:
        return None
    x, y, name = found
    mask = (x != 0) & (y <= 0) & torch.isfinite(y) & torch.isfinite(x)
    if not bool(mask.any()):
        return None
    return _found(mask, f"min {name} {fmt(y[mask].min())} <= 0 where x != 0")


@check("xlogy_y_zero", ops=_XLOGY)
def _xlogy_gradient(call: OpCall) -> Evidence | None:
    """The gradient with respect to y is x / y: NaN at y == 0 even where x == 0 (the forward is 0 there)."""
    found = _log_argument(call)
    if found is None:
        return None
    _, y, name = found
    mask = y == 0
    if not bool(mask.any()):
        return None
    return _found(mask, f"{_count(mask)} of {name} exactly 0: the gradient x / {name} is 0/0 or infinite")


@check("zero_times_inf", ops=["mul", "multiply"])
def _zero_times_inf(call: OpCall) -> Evidence | None:
    pair = _pair(call)
    if pair is None:
        return None
    a, b = pair
    mask = ((a == 0) & torch.isinf(b)) | (torch.isinf(a) & (b == 0))
    if not bool(mask.any()):
        return None
    return _found(mask, f"{_count(mask)} of 0 * inf (e.g. a zero probability times a log of 0)")


@check("inf_minus_inf", ops=["add", "sub", "rsub", "subtract"])
def _inf_minus_inf(call: OpCall) -> Evidence | None:
    pair = _pair(call)
    if pair is None:
        return None
    a, b = pair
    same = torch.sign(a) == torch.sign(b)
    subtract = call.key in ("sub", "rsub")
    mask = torch.isinf(a) & torch.isinf(b) & (same if subtract else ~same)
    if not bool(mask.any()):
        return None
    return _found(mask, f"{_count(mask)} of inf - inf")
