"""Checks that tell overflow from domain errors: finite inputs whose exact result (recomputed in float64)
exceeds the range of the dtype the op computes in."""

from __future__ import annotations

import math

import torch

from nanprobe.knowledge.checks.domain import as_tensor
from nanprobe.knowledge.checks.registry import Evidence, OpCall, check, fmt, rows_where

__all__ = ["dtype_max"]

_PRODUCTS = ("mm", "bmm", "matmul", "mv", "dot", "addmm", "baddbmm", "addmv", "linear", "convolution")
_VARIANCES = ("native_layer_norm", "layer_norm", "native_group_norm", "group_norm", "native_batch_norm",
              "_native_batch_norm_legit", "var", "var_mean")
_NORMS = ("linalg_vector_norm", "norm", "_cdist_forward", "cdist")

_LOW = (torch.float16, torch.bfloat16)


def dtype_max(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _over(values: torch.Tensor, dtype: torch.dtype, text: str) -> Evidence | None:
    """Evidence where ``values`` (exact, float64) exceed ``dtype``'s max."""
    mask = torch.isfinite(values) & (values.abs() > dtype_max(dtype))
    if not bool(mask.any()):
        return None
    rows, where = rows_where(mask)
    top = values[mask].abs().max()
    return Evidence(f"{text} reaches {fmt(top)} > {_name(dtype)} max {fmt(dtype_max(dtype))}: overflow, not a "
                    f"domain error{where}", rows)


def _result_dtype(a: object, b: object) -> torch.dtype | None:
    """The floating dtype an op on ``a`` and ``b`` (tensors or Python scalars) computes in."""
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        return None
    try:
        dtype = torch.result_type(a, b)  # type: ignore[arg-type]
    except (TypeError, RuntimeError):
        return None
    return dtype if dtype.is_floating_point else None


def _finite_float(value: object) -> torch.Tensor | None:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.numel() == 0:
        return None
    return value if bool(torch.isfinite(value).all()) else None


@check("exp_overflow", ops=("exp", "exp2", "expm1", "cosh", "sinh"))
def _exp_overflow(call: OpCall) -> Evidence | None:
    """exp / expm1 overflow above log(max); exp2 above log2(max); cosh / sinh above log(2 * max)."""
    x = call.tensor(0, "self")
    if x is None or not x.is_floating_point() or x.numel() == 0:
        return None
    top = dtype_max(x.dtype)
    if call.key == "exp2":
        limit, name = math.log2(top), "log2(max)"
        mask = x > limit
    elif call.key in ("cosh", "sinh"):
        limit, name = math.log(2 * top), "log(2 * max)"
        mask = x.abs() > limit
    else:
        limit, name = math.log(top), "log(max)"
        mask = x > limit
    mask = mask & torch.isfinite(x)
    if not bool(mask.any()):
        return None
    rows, where = rows_where(mask)
    return Evidence(f"input up to {fmt(x[mask].abs().max())} > {name} = {fmt(limit)} for {_name(x.dtype)}: "
                    f"{call.key} overflows{where}", rows)


@check("pow_overflow", ops=["pow", "float_power"])
def _pow_overflow(call: OpCall) -> Evidence | None:
    base, exponent = as_tensor(call.get(0, "self")), as_tensor(call.get(1, "exponent"))
    if base is None or exponent is None:
        return None
    dtype = _result_dtype(call.get(0, "self"), call.get(1, "exponent"))
    if dtype is None:
        return None
    b, e = torch.broadcast_tensors(base.double(), exponent.double())
    finite = torch.isfinite(b) & torch.isfinite(e) & ~((b == 0) & (e < 0))
    exact = torch.where(finite, b.abs().pow(e), torch.zeros_like(b))
    return _over(exact, dtype, "|base| ** exponent")


@check("square_overflow")
def _square_overflow(call: OpCall) -> Evidence | None:
    """Ops that square their inputs (mse, variance, norms, cosine similarity) overflow above sqrt(max): the
    inputs, or the difference of the first two when they have the same shape (input - target)."""
    floats = [t for t in call.floats() if t.numel() and bool(torch.isfinite(t).all())]
    if not floats:
        return None
    dtype = floats[0].dtype
    candidates = [t.double() for t in floats]
    if len(floats) >= 2 and floats[0].shape == floats[1].shape:
        candidates.insert(0, floats[0].double() - floats[1].double())
    limit = math.sqrt(dtype_max(torch.float32 if dtype in _LOW and call.key != "mul" else dtype))
    for values in candidates:
        mask = values.abs() > limit
        if bool(mask.any()):
            rows, where = rows_where(mask)
            return Evidence(f"|value| up to {fmt(values[mask].abs().max())} > sqrt({_name(dtype)} max) = "
                            f"{fmt(limit)}: its square overflows, not a domain error{where}", rows)
    return None


@check("norm_overflow", ops=_NORMS)
def _norm_overflow(call: OpCall) -> Evidence | None:
    """linalg_vector_norm / norm (self, ord, dim, keepdim) and _cdist_forward (x1, x2, p): the sum of
    |x| ** p overflows although every |x| is finite."""
    if call.key.startswith("cdist"):
        x1, x2 = call.tensor(0, "x1"), call.tensor(1, "x2")
        if _finite_float(x1) is None or _finite_float(x2) is None:
            return None
        p = float(call.get(2, "p", 2.0))
        diff = (x1.double().unsqueeze(-2) - x2.double().unsqueeze(-3)).abs()
        return _over(diff.pow(p).sum(-1) if p > 0 else diff.sum(-1), x1.dtype, f"sum of |x1 - x2| ** {fmt(p)}")
    x = _finite_float(call.get(0, "self"))
    if x is None:
        return None
    p = call.get(1, "ord", 2.0)
    p = 2.0 if p is None else float(p)
    if math.isinf(p) or p <= 0:
        return None
    dim = call.get(2, "dim")
    dims = list(range(x.dim())) if dim is None or dim == [] else ([dim] if isinstance(dim, int) else list(dim))
    powered = x.double().abs().pow(p).sum(dim=dims, keepdim=True) if x.dim() else x.double().abs().pow(p)
    acc = torch.float32 if x.dtype in _LOW else x.dtype
    return _over(powered, acc, f"sum of |x| ** {fmt(p)}")


@check("near_dtype_max")
def _near_dtype_max(call: OpCall) -> Evidence | None:
    """Some finite input within a factor 16 of the dtype's max: sums or differences of a few such values
    overflow."""
    for t in call.floats():
        if not t.numel():
            continue
        top = dtype_max(t.dtype)
        mask = torch.isfinite(t) & (t.abs() > top / 16)
        if bool(mask.any()):
            rows, where = rows_where(mask)
            return Evidence(f"input |max| {fmt(t[mask].abs().max())} is within a factor 16 of {_name(t.dtype)} "
                            f"max {fmt(top)}{where}", rows)
    return None


def _exact_product(call: OpCall) -> tuple[torch.Tensor, torch.dtype] | None:
    """The product an mm-like op computes, in float64, and the dtype it computes in."""
    k = call.key
    if k in ("mm", "bmm", "matmul", "mv", "dot"):
        a, b = _finite_float(call.get(0, "self")), _finite_float(call.get(1, "mat2"))
        if a is None or b is None:
            return None
        return torch.matmul(a.double(), b.double()), a.dtype
    if k in ("addmm", "baddbmm", "addmv"):
        bias, a, b = call.get(0, "self"), _finite_float(call.get(1, "mat1")), _finite_float(call.get(2, "mat2"))
        if a is None or b is None:
            return None
        beta, alpha = float(call.get(3, "beta", 1.0)), float(call.get(4, "alpha", 1.0))
        out = alpha * torch.matmul(a.double(), b.double())
        if isinstance(bias, torch.Tensor) and beta != 0:
            out = out + beta * bias.double()
        return out, a.dtype
    if k == "linear":
        x, w, b = _finite_float(call.get(0, "input")), _finite_float(call.get(1, "weight")), call.get(2, "bias")
        if x is None or w is None:
            return None
        return torch.nn.functional.linear(x.double(), w.double(), b.double() if isinstance(b, torch.Tensor)
                                          else None), x.dtype
    if k == "convolution":
        x, w = _finite_float(call.get(0, "input")), _finite_float(call.get(1, "weight"))
        if x is None or w is None:
            return None
        rest = [a.double() if isinstance(a, torch.Tensor) else a for a in call.args[2:]]
        return torch.ops.aten.convolution(x.double(), w.double(), *rest), x.dtype
    return None


@check("product_overflow", ops=_PRODUCTS)
def _product_overflow(call: OpCall) -> Evidence | None:
    """mm / bmm / addmm / baddbmm / mv / dot / linear / convolution: the exact product exceeds the dtype."""
    found = _exact_product(call)
    if found is None:
        return None
    exact, dtype = found
    return _over(exact, dtype, f"the exact {call.key} result")


@check("arithmetic_overflow", ops=["add", "sub", "rsub", "mul", "div"])
def _arithmetic_overflow(call: OpCall) -> Evidence | None:
    """add / sub / mul / div of finite values whose exact result exceeds the dtype."""
    a, b = as_tensor(call.get(0, "self")), as_tensor(call.get(1, "other"))
    dtype = _result_dtype(call.get(0, "self"), call.get(1, "other"))
    if a is None or b is None or dtype is None:
        return None
    x, y = torch.broadcast_tensors(a.double(), b.double())
    ok = torch.isfinite(x) & torch.isfinite(y)
    alpha = float(call.get(2, "alpha", 1.0))
    k = call.key
    if k == "add":
        exact = x + alpha * y
    elif k in ("sub", "rsub"):
        exact = x - alpha * y if k == "sub" else y - alpha * x
    elif k == "mul":
        exact = x * y
    elif k == "div":
        ok = ok & (y != 0)
        exact = x / torch.where(y == 0, torch.ones_like(y), y)
    else:
        return None
    return _over(torch.where(ok, exact, torch.zeros_like(exact)), dtype, f"the exact {k} result")


@check("reduction_overflow", ops=["sum", "nansum", "mean", "cumsum", "prod", "cumprod"])
def _reduction_overflow(call: OpCall) -> Evidence | None:
    """sum / mean / cumsum / prod / cumprod of finite values whose running total exceeds the dtype (mean
    accumulates its sum first; float16/bfloat16 sums accumulate in float32 but still store the result)."""
    x = _finite_float(call.get(0, "self"))
    if x is None:
        return None
    k = call.key
    dim = call.get(1, "dim")
    values = x.double()
    if k in ("cumsum", "cumprod"):
        d = int(dim) if isinstance(dim, int) else 0
        exact = values.cumsum(d) if k == "cumsum" else values.cumprod(d)
    else:
        if isinstance(dim, int) and not isinstance(dim, bool):
            dims: list[int] = [dim]
        elif isinstance(dim, (list, tuple)) and dim:
            dims = list(dim)
        else:
            dims = list(range(values.dim()))
        if k == "prod":
            exact = values.prod(dims[0], keepdim=True) if len(dims) == 1 else values.prod().reshape(())
        else:
            total = values.sum(dims, keepdim=True) if dims else values
            acc = torch.float32 if x.dtype in _LOW else x.dtype
            found = _over(total, acc, f"the running {k} sum")
            if found is not None or k != "mean":
                return found or _over(total, x.dtype, f"the exact {k}")
            exact = total / max(1, math.prod(values.shape[d] for d in dims))
    return _over(exact, x.dtype, f"the exact {k}")


@check("cast_overflow", ops=["_to_copy", "to", "_to_dtype"])
def _cast_overflow(call: OpCall) -> Evidence | None:
    """_to_copy / to a narrower dtype (autocast does this before matmul, linear and conv): finite values beyond
    the target dtype's max become inf."""
    x = _finite_float(call.get(0, "self"))
    target = call.kwargs.get("dtype", call.get(1, "dtype"))
    if x is None or not isinstance(target, torch.dtype) or not target.is_floating_point:
        return None
    mask = x.abs() > dtype_max(target)
    if not bool(mask.any()):
        return None
    rows, where = rows_where(mask)
    return Evidence(f"values up to {fmt(x[mask].abs().max())} cast from {_name(x.dtype)} to {_name(target)} "
                    f"(max {fmt(dtype_max(target))}): overflow{where}", rows)


def _slices(call: OpCall) -> tuple[torch.Tensor, list[int], bool] | None:
    """The values a normalisation or variance reduces, as (x, dims reduced, whether dim 0 is a batch)."""
    x = _finite_float(call.get(0, "input"))
    if x is None:
        return None
    k = call.key
    if k == "nativelayernorm":
        shape = list(call.get(1, "normalized_shape"))
        return x, list(range(x.dim() - len(shape), x.dim())), True
    if k == "nativegroupnorm":
        n, groups = int(call.get(3, "N")), int(call.get(6, "group"))
        return x.reshape(n, groups, -1), [2], True
    if k in ("nativebatchnorm", "nativebatchnormlegit"):
        return x, [d for d in range(x.dim()) if d != 1], False
    if k in ("var", "varmean"):
        dim = call.get(1, "dim")
        if dim is None or isinstance(dim, bool):
            return x, list(range(x.dim())), False
        dims = [dim] if isinstance(dim, int) else list(dim)
        dims = [d % max(1, x.dim()) for d in dims] or list(range(x.dim()))
        return x, dims, 0 not in dims
    return None


@check("variance_overflow", ops=_VARIANCES)
def _variance_overflow(call: OpCall) -> Evidence | None:
    """Finite inputs whose squared deviations from their mean sum past the max of the dtype the statistics
    are accumulated in (float32 for float16/bfloat16 inputs): the variance overflows to inf, the output is NaN
    or silently 0. Overflow, not a domain error."""
    found = _slices(call)
    if found is None:
        return None
    x, dims, batched = found
    values = x.double()
    squares = (values - values.mean(dims, keepdim=True)).pow(2).sum(dims, keepdim=True)
    what = "the sum of squared deviations"
    if call.key in ("var", "varmean"):  # accumulated exactly; only the variance itself must fit
        squares = squares / max(1, math.prod(x.shape[d] for d in dims) - 1)
        what = "the variance"
    acc = torch.float32 if x.dtype in _LOW else x.dtype
    mask = squares > dtype_max(acc)
    if not bool(mask.any()):
        return None
    rows, where = rows_where(mask) if batched else (None, "")
    return Evidence(f"inputs up to {fmt(x.abs().max())}: {what} reaches "
                    f"{fmt(squares[mask].max())} > {_name(acc)} max {fmt(dtype_max(acc))}; the variance "
                    f"overflows (not a domain error){where}", rows)


@check("soft_margin_overflow", ops=["soft_margin_loss"])
def _soft_margin_overflow(call: OpCall) -> Evidence | None:
    """soft_margin_loss computes log(1 + exp(-y * x)) directly: exp overflows once -y * x > log(max)."""
    x, y = call.tensor(0, "self"), call.tensor(1, "target")
    if x is None or y is None or not x.is_floating_point() or x.numel() == 0:
        return None
    z = -(y.double() * x.double())
    limit = math.log(dtype_max(x.dtype))
    mask = torch.isfinite(z) & (z > limit)
    if not bool(mask.any()):
        return None
    rows, where = rows_where(mask)
    return Evidence(f"-target * input reaches {fmt(z[mask].max())} > log(max) = {fmt(limit)}: exp overflows"
                    f"{where}", rows)


@check("fp16_probability_at_bound", ops=["binary_cross_entropy"])
def _bce_half(call: OpCall) -> Evidence | None:
    """binary_cross_entropy's gradient is (p - y) / max(p (1 - p), 1e-12): about 1e12 where p is exactly 0 or
    1 against the target, beyond float16's 65504."""
    p, y = call.tensor(0, "self"), call.tensor(1, "target")
    if p is None or y is None or p.dtype != torch.float16:
        return None
    mask = ((p == 0) & (y != 0)) | ((p == 1) & (y != 1))
    if not bool(mask.any()):
        return None
    rows, where = rows_where(mask)
    return Evidence(f"{int(mask.sum())} float16 probabilities exactly 0 or 1 against the target: the gradient "
                    f"~1e12 exceeds float16 max 65504{where}", rows)
