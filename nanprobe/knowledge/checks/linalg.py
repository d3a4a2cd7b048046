"""Checks on matrices: repeated eigen/singular values (their backward divides by the gaps), singular and
non-positive-definite matrices. Spectra are recomputed in float64; a gap or singular value counts as zero
below a few ulps of the input's dtype, relative to the largest."""

from __future__ import annotations

import torch

from nanprobe.knowledge.checks.registry import Evidence, OpCall, check, fmt

__all__: list[str] = []

_SINGULAR_OPS = ("linalg_inv_ex", "_linalg_solve_ex", "_linalg_slogdet", "linalg_qr", "linalg_inv", "linalg_solve",
                 "inverse")


def _matrix(call: OpCall) -> torch.Tensor | None:
    a = call.tensor(0, "A") if call.args else call.kwargs.get("A", call.kwargs.get("self"))
    if not isinstance(a, torch.Tensor) or a.dim() < 2 or a.numel() == 0 or not bool(torch.isfinite(a).all()):
        return None
    return a


def _tolerance(a: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(a.dtype).eps if a.is_floating_point() else torch.finfo(torch.float32).eps
    return 4 * eps * max(a.shape[-2:]) * scale.clamp_min(1.0)


def _batch_rows(mask: torch.Tensor) -> tuple[tuple[int, ...] | None, str]:
    """``mask`` has one entry per matrix; the rows are the leading batch indices when there is a batch."""
    if mask.dim() == 0:
        return None, ""
    flat = mask.reshape(mask.shape[0], -1).any(dim=1) if mask.dim() > 1 else mask
    rows = tuple(int(i) for i in flat.nonzero().flatten().tolist())
    return rows, f" in matrices {list(rows[:12])}"


def _smallest_gap(values: torch.Tensor) -> torch.Tensor:
    """Per matrix, the smallest distance between two of its (real or complex) eigenvalues."""
    n = values.shape[-1]
    if n < 2:
        return torch.full(values.shape[:-1], float("inf"), dtype=torch.float64)
    diff = (values.unsqueeze(-1) - values.unsqueeze(-2)).abs()
    diff = diff.masked_fill(torch.eye(n, dtype=torch.bool), float("inf"))
    return diff.amin(dim=(-2, -1))


@check("repeated_eigenvalues", ops=["_linalg_eigh", "linalg_eig"])
def _repeated_eigenvalues(call: OpCall) -> Evidence | None:
    """_linalg_eigh / linalg_eig: two equal eigenvalues. The eigenvectors' backward divides by their
    difference (0/0); the eigenvalues alone are differentiable."""
    a = _matrix(call)
    if a is None or a.shape[-1] != a.shape[-2]:
        return None
    if call.key.endswith("eigh"):
        if call.get(2, "compute_v", True) is False:
            return None
        values = torch.linalg.eigvalsh(a.double())
    else:
        values = torch.linalg.eigvals(a.double())
    gap = _smallest_gap(values)
    scale = values.abs().amax(dim=-1)
    mask = gap <= _tolerance(a, scale)
    if not bool(mask.any()):
        return None
    rows, where = _batch_rows(mask)
    return Evidence(f"repeated eigenvalues (smallest gap {fmt(gap[mask].min())}): the eigenvector gradient divides "
                    f"by 0{where}", rows)


@check("degenerate_singular_values", ops=["_linalg_svd"])
def _degenerate_singular_values(call: OpCall) -> Evidence | None:
    """_linalg_svd with compute_uv: repeated singular values, or a zero singular value of a non-square matrix;
    the backward of U / Vh divides by their differences. svdvals alone (compute_uv=False) is safe."""
    a = _matrix(call)
    if a is None or call.get(2, "compute_uv", True) is False:
        return None
    values = torch.linalg.svdvals(a.double())
    scale = values.amax(dim=-1)
    tol = _tolerance(a, scale)
    gap = _smallest_gap(values)
    repeated = gap <= tol
    zero = (values.amin(dim=-1) <= tol) & torch.tensor(a.shape[-1] != a.shape[-2])
    mask = repeated | zero
    if not bool(mask.any()):
        return None
    rows, where = _batch_rows(mask)
    what = "repeated singular values" if bool(repeated.any()) else "a zero singular value of a non-square matrix"
    return Evidence(f"{what} (smallest gap {fmt(gap[mask].min())}, smallest value {fmt(values.min())}): the "
                    f"backward of U/Vh divides by 0{where}", rows)


@check("singular_matrix", ops=_SINGULAR_OPS)
def _singular_matrix(call: OpCall) -> Evidence | None:
    """linalg_inv_ex / _linalg_solve_ex / _linalg_slogdet / linalg_qr: rank below min(m, n)."""
    a = _matrix(call)
    if a is None:
        return None
    values = torch.linalg.svdvals(a.double())
    smallest, largest = values.amin(dim=-1), values.amax(dim=-1)
    mask = smallest <= _tolerance(a, largest)
    if not bool(mask.any()):
        return None
    rows, where = _batch_rows(mask)
    return Evidence(f"singular matrix (smallest singular value {fmt(smallest[mask].min())}, largest "
                    f"{fmt(largest[mask].max())}){where}", rows)


@check("not_positive_definite", ops=["linalg_cholesky_ex", "linalg_cholesky", "cholesky"])
def _not_positive_definite(call: OpCall) -> Evidence | None:
    """linalg_cholesky_ex: an eigenvalue <= 0 (linalg.cholesky then raises; cholesky_ex returns info > 0)."""
    a = _matrix(call)
    if a is None or a.shape[-1] != a.shape[-2]:
        return None
    values = torch.linalg.eigvalsh(a.double())
    smallest = values.amin(dim=-1)
    mask = smallest <= 0
    if not bool(mask.any()):
        return None
    rows, where = _batch_rows(mask)
    return Evidence(f"not positive-definite (smallest eigenvalue {fmt(smallest[mask].min())}){where}", rows)


@check("nonpositive_determinant", ops=["logdet", "_linalg_slogdet"])
def _nonpositive_determinant(call: OpCall) -> Evidence | None:
    """logdet: log of a determinant <= 0 (-inf at 0, NaN below)."""
    a = _matrix(call)
    if a is None or a.shape[-1] != a.shape[-2]:
        return None
    det = torch.linalg.det(a.double())
    scale = torch.linalg.svdvals(a.double()).amax(dim=-1).pow(a.shape[-1])
    mask = det <= 4 * torch.finfo(a.dtype).eps * scale
    if not bool(mask.any()):
        return None
    rows, where = _batch_rows(mask)
    return Evidence(f"determinant {fmt(det[mask].min())} <= 0{where}", rows)
