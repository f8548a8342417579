"""Matrix-level normalisations: per-row (neuron-wise) second moments and RMS alignment.

Sums over a whole matrix go through a ``matrix_sum`` function ``(N, m, n) → (N, 1, 1)``. In one
process it is :func:`local_matrix_sum`; when a matrix is sharded by rows, the distributed layer
passes a function that adds the shards' partial sums, so the statistic stays exact.

Example:
    >>> import torch
    >>> O = torch.ones(1, 2, 8)
    >>> rms_align(O, 0.2)[0, 0, 0].item()  # RMS of the result is 0.2
    0.20000000298023224
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MatrixSum = Callable[[torch.Tensor], torch.Tensor]


def local_matrix_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of each matrix of a stack ``(N, m, n) → (N, 1, 1)``."""
    return x.sum(dim=(-2, -1), keepdim=True)


def frobenius_norm(x: torch.Tensor, matrix_sum: MatrixSum = local_matrix_sum) -> torch.Tensor:
    """``‖X‖_F`` of each stacked matrix, shape ``(N, 1, 1)``, from row norms (no temporary of ``x``'s size).

    Meant for bounded inputs (orthogonalized directions and their normalised forms); use
    :func:`safe_frobenius_norm` for raw gradients and momenta, whose squares can overflow.
    """
    return matrix_sum(row_square_sum(x)).sqrt()


def row_square_sum(x: torch.Tensor) -> torch.Tensor:
    """``Σ_cols x²`` per row, ``(N, m, n) → (N, m, 1)``, in one read of ``x`` (no squared copy)."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_()


def safe_frobenius_norm(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``‖X‖_F`` over the last two dims (shape ``(..., 1, 1)``), finite for every finite ``X``.

    The plain sum of squares overflows once ``‖X‖_F`` exceeds ``sqrt(finfo.max)`` (about 1.8e19 in
    fp32: one gradient spike of 1e20 is enough), and an infinite norm turns ``X/‖X‖_F`` into zero.
    The fast sum of squares is kept where it is finite; the matrices where it is not are
    recomputed as ``s·‖X/s‖_F`` with ``s = max|X|`` (every scaled entry is at most 1, so no square
    overflows). ``dtype`` is the accumulation dtype (default: ``x``'s).

    Example:
        >>> x = torch.full((1, 4, 4), 1e20)
        >>> torch.linalg.vector_norm(x, dim=(-2, -1)).item()
        inf
        >>> safe_frobenius_norm(x).item()
        4.0000000801635094e+20
    """
    norm = torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True, dtype=dtype)
    if bool(torch.isfinite(norm).all()):
        return norm
    wide = x if dtype is None else x.to(dtype)
    scale = wide.abs().amax(dim=(-2, -1), keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    scaled = scale * torch.linalg.vector_norm(wide / scale, dim=(-2, -1), keepdim=True)
    return torch.where(torch.isfinite(norm), norm, scaled)


def row_mean_square(O: torch.Tensor) -> torch.Tensor:
    """``mean_cols(O ⊙ O)`` per output row (neuron): ``(N, m, n) → (N, m, 1)``."""
    return row_square_sum(O).div_(max(1, O.size(-1)))


def rms_align(
    x: torch.Tensor,
    target: float,
    matrix_sum: MatrixSum = local_matrix_sum,
    numel: int | None = None,
) -> torch.Tensor:
    """Rescale each matrix to RMS ``target``: ``x · target·sqrt(mn)/‖x‖_F`` (NorMuon, AdaMuon).

    ``numel`` is ``m·n`` of the *whole* matrix (defaults to the local one). A zero matrix stays zero.
    """
    mn = numel if numel is not None else x.size(-2) * x.size(-1)
    return x * safe_ratio(target * mn**0.5, frobenius_norm(x, matrix_sum))


def match_norm(
    x: torch.Tensor, reference_norm: torch.Tensor, matrix_sum: MatrixSum = local_matrix_sum
) -> torch.Tensor:
    """Rescale each matrix of ``x`` to the Frobenius norm ``reference_norm`` (the official NorMuon code)."""
    return x * safe_ratio(reference_norm, frobenius_norm(x, matrix_sum))


def safe_ratio(numerator: torch.Tensor | float, norm: torch.Tensor) -> torch.Tensor:
    """``numerator / norm`` where ``norm > 0``, else 0 (a zero matrix stays zero, never 0·inf = NaN)."""
    positive = norm > 0
    return torch.where(
        positive,
        numerator / torch.where(positive, norm, torch.ones_like(norm)),
        torch.zeros_like(norm),
    )
