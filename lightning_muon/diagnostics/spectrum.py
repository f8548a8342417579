r"""Singular-value statistics of updates, momenta, orthogonalized directions and weights.

For ``A ∈ R^{m×n}`` (any tensor is first viewed as a matrix by
:func:`~lightning_muon.diagnostics.matrix.matrix_view`) with singular values
``σ_1 ≥ … ≥ σ_r ≥ 0``, ``r = min(m, n)``:

* condition number ``κ = σ_1 / σ_r`` (``inf`` when ``σ_r = 0 < σ_1``);
* stable rank ``‖A‖_F² / σ_1² = Σ_i σ_i² / σ_1²`` (in ``[1, r]``);
* effective rank (Roy & Vetterli, 2007) ``exp(H(p))`` with ``p_i = σ_i / Σ_j σ_j`` and
  ``H(p) = −Σ_i p_i log p_i`` (``0 log 0 = 0``; in ``[1, r]``);
* top-k singular values ``σ_1 … σ_k`` (``nan``-padded when ``k > r``);
* orthogonality error of a direction ``O``: the distance to the *nearest semi-orthogonal matrix*
  (the polar factor ``U Vᵀ`` of ``O = U Σ Vᵀ``; it has ``OᵀO = I`` or ``OOᵀ = I``), per singular
  direction:

  .. math:: e(O) = \frac{\|O - UV^\top\|_F}{\sqrt r} = \sqrt{\tfrac1r \sum_i (\sigma_i - 1)^2}.

  It is 0 for an exactly orthogonalized direction and is **not** scale invariant on purpose: a
  Newton–Schulz output is meant to have ``σ_i ≈ 1`` (the Jordan quintic lands in about
  ``[0.68, 1.13]``). The Gram form ``‖OᵀO − I‖`` is not used.

All statistics except the top-k values and the orthogonality error are scale invariant, so an
update ``ΔW = −η·s·O`` and its direction ``O`` have the same condition number.

Matrices with non-finite entries are not decomposed: :func:`spectrum_stats` reports how many
entries were non-finite and returns ``nan`` statistics. Empty matrices give ``nan`` statistics.

Example:
    >>> import torch
    >>> a = torch.diag(torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64))
    >>> stats, sv = spectrum_stats(a, top_k=2)
    >>> sv.tolist(), stats.condition_number, stats.stable_rank
    ([4.0, 2.0, 1.0], 4.0, 1.3125)
    >>> round(stats.effective_rank, 4), stats.top_k
    (2.6005, (4.0, 2.0))
    >>> orthogonality_error(torch.tensor([1.0, 1.0, 0.0]))
    0.5773502691896257
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from lightning_muon.diagnostics.matrix import compute_dtype, count_nonfinite, matrix_view

__all__ = [
    "SpectrumStats",
    "condition_number",
    "effective_rank",
    "orthogonality_error",
    "singular_values",
    "spectrum_stats",
    "stable_rank",
    "stats_from_singular_values",
]

_NAN = float("nan")


def singular_values(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Singular values of ``matrix_view(x)``, descending.

    Args:
        x: tensor to decompose; must be finite (LAPACK refuses NaN/inf; use
            :func:`spectrum_stats` for input that may not be).
        dtype: compute dtype; default float32 (float64 for float64 input).

    Returns:
        1-D tensor of ``min(m, n)`` values in ``dtype`` on ``x``'s device.
    """
    m = matrix_view(x.detach()).to(compute_dtype(x, dtype))
    if m.numel() == 0:
        return m.new_zeros(0)
    return torch.linalg.svdvals(m)


def _values(sv: Tensor) -> Tensor:
    return sv.detach().reshape(-1).to(torch.float64)


def condition_number(sv: Tensor) -> float:
    """``σ_max / σ_min`` of singular values ``sv``; ``inf`` if ``σ_min = 0 < σ_max``, ``nan`` if all 0."""
    s = _values(sv)
    if s.numel() == 0:
        return _NAN
    hi, lo = s.max().item(), s.min().item()
    if hi == 0:
        return _NAN
    return hi / lo if lo > 0 else math.inf


def stable_rank(sv: Tensor) -> float:
    """``Σ σ_i² / σ_max²`` (``nan`` for the zero or the empty matrix)."""
    s = _values(sv)
    if s.numel() == 0 or s.max().item() == 0:
        return _NAN
    return (s.square().sum() / s.max().square()).item()


def effective_rank(sv: Tensor) -> float:
    """Roy–Vetterli effective rank ``exp(−Σ p_i log p_i)``, ``p = σ / Σσ`` (``nan`` for zero/empty)."""
    s = _values(sv)
    total = s.sum().item() if s.numel() else 0.0
    if total == 0:
        return _NAN
    p = s / total
    p = p[p > 0]
    return math.exp(-(p * p.log()).sum().item())


def orthogonality_error(sv: Tensor) -> float:
    """``sqrt(mean_i (σ_i − 1)²) = ‖O − UVᵀ‖_F / sqrt(r)``: distance to the nearest semi-orthogonal matrix."""
    s = _values(sv)
    if s.numel() == 0:
        return _NAN
    return (s - 1).square().mean().sqrt().item()


@dataclass(frozen=True)
class SpectrumStats:
    """Singular-value statistics of one matrix (see the module docstring for definitions).

    Attributes:
        shape: ``(m, n)`` of the matrix view.
        num_nonfinite: non-finite entries of the input; when > 0 the matrix was not decomposed
            and every statistic is ``nan``.
        sigma_max: ``σ_1``.
        sigma_min: ``σ_r``.
        condition_number: ``σ_1 / σ_r``.
        stable_rank: ``Σ σ_i² / σ_1²``.
        effective_rank: Roy–Vetterli entropy rank.
        top_k: ``(σ_1, …, σ_k)``.
        orthogonality_error: ``sqrt(mean (σ_i − 1)²)``; meaningful for orthogonalized directions.
    """

    shape: tuple[int, int]
    num_nonfinite: int
    sigma_max: float
    sigma_min: float
    condition_number: float
    stable_rank: float
    effective_rank: float
    top_k: tuple[float, ...]
    orthogonality_error: float

    def as_dict(self) -> dict[str, object]:
        """All fields as a plain ``dict``."""
        return asdict(self)


def stats_from_singular_values(
    sv: Tensor, shape: tuple[int, int], top_k: int = 3, num_nonfinite: int = 0
) -> SpectrumStats:
    """Build :class:`SpectrumStats` from already computed singular values (descending)."""
    s = _values(sv)
    top = tuple(s[:top_k].tolist()) + (_NAN,) * max(0, top_k - s.numel())
    if s.numel() == 0:
        return SpectrumStats(shape, num_nonfinite, _NAN, _NAN, _NAN, _NAN, _NAN, top, _NAN)
    return SpectrumStats(
        shape=shape,
        num_nonfinite=num_nonfinite,
        sigma_max=s.max().item(),
        sigma_min=s.min().item(),
        condition_number=condition_number(s),
        stable_rank=stable_rank(s),
        effective_rank=effective_rank(s),
        top_k=top,
        orthogonality_error=orthogonality_error(s),
    )


def spectrum_stats(
    x: Tensor, top_k: int = 3, dtype: torch.dtype | None = None
) -> tuple[SpectrumStats, Tensor]:
    """Decompose ``x`` (as a matrix) and summarise its singular values; never raises on odd input.

    Args:
        x: tensor of any rank (see :func:`~lightning_muon.diagnostics.matrix.matrix_view`).
        top_k: how many of the largest singular values to keep in ``SpectrumStats.top_k``.
        dtype: compute dtype; default float32 (float64 for float64 input).

    Returns:
        ``(stats, sv)``: the statistics and the descending singular values (empty when the input
        had non-finite entries or was empty).

    Raises:
        ValueError: if ``top_k`` is negative.
    """
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    m = matrix_view(x.detach())
    shape = (int(m.shape[0]), int(m.shape[1]))
    bad = count_nonfinite(m)
    if bad:
        return stats_from_singular_values(m.new_zeros(0), shape, top_k, bad), m.new_zeros(0)
    sv = singular_values(m, dtype=compute_dtype(x, dtype))
    return stats_from_singular_values(sv, shape, top_k), sv
