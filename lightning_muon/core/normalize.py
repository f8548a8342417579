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
    """``‖X‖_F`` of each stacked matrix, shape ``(N, 1, 1)``, from row norms (no temporary of ``x``'s size)."""
    return matrix_sum(row_square_sum(x)).sqrt()


def row_square_sum(x: torch.Tensor) -> torch.Tensor:
    """``Σ_cols x²`` per row, ``(N, m, n) → (N, m, 1)``, in one read of ``x`` (no squared copy)."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_()


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
