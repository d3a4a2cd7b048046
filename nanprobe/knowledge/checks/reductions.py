"""Checks on what an op reduces over: empty or too-short reductions, rows that are all -inf, constant rows
normalised with eps=0, masks that hide every key."""

from __future__ import annotations

import math

import torch

from nanprobe.knowledge.checks.registry import Evidence, OpCall, check, fmt, rows_where

__all__: list[str] = []

_STATS = ("std", "var", "std_mean", "var_mean")


def _dims(dim: object, ndim: int) -> list[int]:
    """Normalise a dim argument (None, int, list) to non-negative dims; None or [] means all."""
    if dim is None or isinstance(dim, bool) or (isinstance(dim, (list, tuple)) and not dim):
        return list(range(ndim))
    dims = [dim] if isinstance(dim, int) else list(dim)  # type: ignore[arg-type]
    return sorted({d % max(1, ndim) for d in dims})


@check("empty_input")
def _empty_input(call: OpCall) -> Evidence | None:
    """The first tensor argument has no elements: a mean over it (or a loss's 'mean' reduction) is 0/0."""
    x = call.get(0, "self")
    if not isinstance(x, torch.Tensor) or x.numel() != 0:
        return None
    return Evidence(f"input has no elements (shape {tuple(x.shape)}): a mean over it is 0/0")


@check("all_neg_inf_row", ops=["_softmax", "_log_softmax", "logsumexp"])
def _all_neg_inf_row(call: OpCall) -> Evidence | None:
    """_softmax / _log_softmax (self, dim, half_to_float) and logsumexp (self, dim, keepdim): a slice along
    the reduced dim that is entirely -inf (every entry masked)."""
    x = call.tensor(0, "self")
    if x is None or not x.is_floating_point() or x.numel() == 0:
        return None
    dims = _dims(call.get(1, "dim"), x.dim())
    full = (x == float("-inf")).all(dim=dims, keepdim=True) if x.dim() else x == float("-inf")
    if not bool(full.any()):
        return None
    rows, where = rows_where(full) if 0 not in dims else (None, "")
    n = int(full.sum())
    return Evidence(f"{n} slice{'s' if n != 1 else ''} along dim {dims[0] if len(dims) == 1 else dims} "
                    f"entirely -inf{where}", rows)


def _correction(call: OpCall) -> tuple[list[int], float] | None:
    """(reduced dims, correction) of std/var/std_mean/var_mean in any of their overloads."""
    x = call.tensor(0, "self")
    if x is None:
        return None
    dim: object = None
    correction: float = 1.0
    for value in call.args[1:]:
        if isinstance(value, bool):  # unbiased
            correction = 1.0 if value else 0.0
            break
        if value is None or isinstance(value, (int, list, tuple)):
            dim = value
            continue
    if "dim" in call.kwargs:
        dim = call.kwargs["dim"]
    if "unbiased" in call.kwargs:
        correction = 1.0 if call.kwargs["unbiased"] else 0.0
    if call.kwargs.get("correction") is not None:
        correction = float(call.kwargs["correction"])
    return _dims(dim, x.dim()), correction


def _too_few(call: OpCall, batch_only: bool) -> Evidence | None:
    found = _correction(call)
    x = call.tensor(0, "self")
    if found is None or x is None:
        return None
    dims, correction = found
    if batch_only and (x.dim() == 0 or 0 not in dims):
        return None
    n = math.prod(x.shape[d] for d in dims) if x.dim() else 1
    if n - correction > 0:
        return None
    what = f"over the batch dimension (a batch of {x.shape[0]})" if batch_only else f"along dims {dims}"
    return Evidence(f"{n} value{'s' if n != 1 else ''} {what} with correction {fmt(correction)}: divides by "
                    f"{fmt(n - correction)}")


@check("too_few_for_correction", ops=_STATS)
def _too_few_for_correction(call: OpCall) -> Evidence | None:
    return _too_few(call, batch_only=False)


@check("batch_too_small_for_correction", ops=_STATS)
def _batch_too_small(call: OpCall) -> Evidence | None:
    """As too_few_for_correction, when the reduction runs over dim 0, the batch."""
    return _too_few(call, batch_only=True)


def _eps(call: OpCall) -> float | None:
    k = call.key
    index = {"nativelayernorm": (4, "eps"), "nativegroupnorm": (7, "eps"), "rmsnorm": (3, "eps"),
             "fusedrmsnorm": (3, "eps")}.get(k)
    if index is None:
        return None
    eps = call.get(*index)
    return None if eps is None else float(eps)


@check("constant_row_eps0", ops=["native_layer_norm", "layer_norm", "native_group_norm", "group_norm"])
def _constant_row_eps0(call: OpCall) -> Evidence | None:
    """native_layer_norm / native_group_norm with eps == 0 on a slice whose variance is 0: 0/0."""
    x = call.tensor(0, "input")
    if x is None or not x.is_floating_point() or x.numel() == 0 or _eps(call) != 0:
        return None
    if call.key == "nativelayernorm":
        dims = list(range(x.dim() - len(call.get(1, "normalized_shape")), x.dim()))
        values = x
    elif call.key == "nativegroupnorm":
        values, dims = x.reshape(int(call.get(3, "N")), int(call.get(6, "group")), -1), [2]
    else:
        return None
    flat = values.double()
    constant = (flat == flat.amax(dim=dims, keepdim=True)).all(dim=dims, keepdim=True) if dims else None
    if constant is None or not bool(constant.any()):
        return None
    rows, where = rows_where(constant)
    n = int(constant.sum())
    return Evidence(f"eps=0 and {n} normalised slice{'s' if n != 1 else ''} constant (variance 0){where}", rows)


@check("zero_row_eps0", ops=["rms_norm", "_fused_rms_norm"])
def _zero_row_eps0(call: OpCall) -> Evidence | None:
    """rms_norm (input, normalized_shape, weight, eps) with eps == 0 on an all-zero slice: 0 * rsqrt(0)."""
    x = call.tensor(0, "input")
    if x is None or not x.is_floating_point() or x.numel() == 0 or _eps(call) != 0:
        return None
    dims = list(range(x.dim() - len(call.get(1, "normalized_shape")), x.dim()))
    zero = (x == 0).all(dim=dims, keepdim=True)
    if not bool(zero.any()):
        return None
    rows, where = rows_where(zero)
    return Evidence(f"eps=0 and {int(zero.sum())} all-zero slice(s): rsqrt(0) = inf{where}", rows)


@check("running_var_nonpositive", ops=["native_batch_norm", "batch_norm", "_native_batch_norm_legit_no_training"])
def _running_var(call: OpCall) -> Evidence | None:
    """Batch norm in eval (native_batch_norm with training=False, _native_batch_norm_legit_no_training):
    running_var + eps <= 0 at some channel, so sqrt(var + eps) is NaN or 0."""
    k = call.key
    if k == "nativebatchnorm":
        var, training, eps = call.get(4, "running_var"), call.get(5, "training"), call.get(7, "eps")
    elif k == "nativebatchnormlegitnotraining":
        var, training, eps = call.get(4, "running_var"), False, call.get(6, "eps")
    else:
        return None
    if training or not isinstance(var, torch.Tensor) or not var.is_floating_point():
        return None
    bad = (var.double() + float(eps or 0.0)) <= 0
    if not bool(bad.any()):
        return None
    channels = bad.nonzero().flatten().tolist()
    return Evidence(f"running_var + eps <= 0 at channel(s) {channels[:8]} (min running_var "
                    f"{fmt(var[bad].min())}): a corrupt buffer or eps=0 on a zero variance")


@check("zero_norm_vector", ops=["linalg_vector_norm", "norm"])
def _zero_norm_vector(call: OpCall) -> Evidence | None:
    """linalg_vector_norm / norm (self, ord, dim, keepdim): some reduced vector is all zeros."""
    x = call.tensor(0, "self")
    if x is None or not x.is_floating_point() or x.numel() == 0:
        return None
    dims = _dims(call.get(2, "dim"), x.dim())
    zero = (x == 0).all(dim=dims, keepdim=True) if x.dim() else x == 0
    if not bool(zero.any()):
        return None
    rows, where = rows_where(zero) if 0 not in dims else (None, "")
    n = int(zero.sum())
    return Evidence(f"{n} zero vector{'s' if n != 1 else ''} under the norm{where}", rows)


def _masks(call: OpCall) -> list[torch.Tensor]:
    """Attention masks among the arguments, as booleans that are True where a key is hidden."""
    found: list[torch.Tensor] = []
    for value in list(call.args) + list(call.kwargs.values()):
        if not isinstance(value, torch.Tensor) or value.dim() < 1:
            continue
        if value.dtype == torch.bool:
            found.append(value)
        elif value.is_floating_point() and bool((value == float("-inf")).any()) and value is not call.args[0]:
            found.append(value == float("-inf"))
    return found


@check("all_keys_masked")
def _all_keys_masked(call: OpCall) -> Evidence | None:
    """_native_multi_head_attention, _transformer_encoder_layer_fwd, _masked_softmax: a mask (True = hidden,
    or -inf) that hides every key of some query, so its softmax runs over nothing."""
    query = call.tensor(0, "query")
    batch = query.shape[0] if query is not None and query.dim() >= 1 else None
    for mask in _masks(call):
        full = mask.all(dim=-1)
        if not bool(full.any()):
            continue
        rows: tuple[int, ...] | None = None
        if batch is not None and mask.dim() >= 2 and mask.shape[0] == batch:
            rows, where = rows_where(full if full.dim() else full.reshape(1))
        elif batch is not None and mask.dim() == 1:
            where = " (every sample)"
        else:
            where = ""
        n = int(full.sum())
        return Evidence(f"{n} quer{'ies' if n != 1 else 'y'}/sample{'s' if n != 1 else ''} with every key "
                        f"masked{where}", rows)
    return None
