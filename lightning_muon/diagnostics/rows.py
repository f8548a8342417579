r"""Per-neuron (per output row) update norms and their summary.

For an update ``ΔW ∈ R^{m×n}`` (weights after a step minus weights before; see
:func:`~lightning_muon.diagnostics.matrix.matrix_view` for tensors that are not 2-D) the norm of
neuron ``i`` is ``r_i = ‖ΔW_{i,:}‖_2``. The NorMuon paper (Figure 1b) shows that Muon's
orthogonalized updates spread these norms unevenly while AdamW and NorMuon keep them even; the
summary below puts a number on that spread:

.. math::

    \bar r = \tfrac1m \sum_i r_i,\qquad
    s = \sqrt{\tfrac1m \sum_i (r_i - \bar r)^2}\ \text{(population std)},\qquad
    \mathrm{cv} = s / \bar r,\qquad
    \text{min/max ratio} = \min_i r_i / \max_i r_i .

Two whole-matrix scalars complete the picture:
``rms(ΔW) = ‖ΔW‖_F / \sqrt{mn}`` and the update-to-weight ratio ``‖ΔW‖_F / ‖W‖_F`` (``W`` = the
weights *before* the step). Both follow from row norms alone (``‖A‖_F² = Σ_i r_i²``), which is
what lets row-sharded (FSDP2) parameters be summarised from gathered row norms.

Non-finite rows are counted and left out of the summary; undefined values (a mean of zero, no
finite rows) are ``nan``. Nothing here raises on odd input.

Example:
    >>> import torch
    >>> delta = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    >>> row_norms(delta)
    tensor([5., 1.])
    >>> s = summarize_row_norms(row_norms(delta))
    >>> (s.mean, s.std, round(s.cv, 4), s.min_max_ratio)
    (3.0, 2.0, 0.6667, 0.2)
    >>> round(update_rms(delta), 4), round(update_to_weight_ratio(delta, torch.eye(2)), 4)
    (2.5495, 3.6056)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from lightning_muon.diagnostics.matrix import compute_dtype, matrix_view

__all__ = [
    "RowNormSummary",
    "UpdateStats",
    "frobenius_from_row_norms",
    "row_norms",
    "summarize_row_norms",
    "update_rms",
    "update_statistics",
    "update_to_weight_ratio",
]

_NAN = float("nan")


def row_norms(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """L2 norm of every output row of ``matrix_view(x)``.

    Args:
        x: update, weight or any parameter-shaped tensor.
        dtype: compute dtype; default float32 (float64 for float64 input).

    Returns:
        1-D tensor of length ``m`` (rows containing NaN/inf give a non-finite norm).
    """
    m = matrix_view(x.detach())
    return torch.linalg.vector_norm(m.to(compute_dtype(x, dtype)), ord=2, dim=1)


@dataclass(frozen=True)
class RowNormSummary:
    """Summary of per-neuron norms ``r_1 … r_m`` (finite rows only).

    Attributes:
        num_rows: number of rows ``m`` including non-finite ones.
        num_nonfinite: rows whose norm is NaN or inf (left out of everything below).
        mean: ``mean_i r_i``.
        std: population standard deviation of ``r_i``.
        cv: coefficient of variation ``std / mean`` (``nan`` when the mean is 0).
        min: ``min_i r_i``.
        max: ``max_i r_i``.
        min_max_ratio: ``min / max`` in ``[0, 1]``; 1 means perfectly even (``nan`` when max is 0).
    """

    num_rows: int
    num_nonfinite: int
    mean: float
    std: float
    cv: float
    min: float
    max: float
    min_max_ratio: float

    def as_dict(self) -> dict[str, float]:
        """All fields as a plain ``dict`` (ints included)."""
        return asdict(self)


def summarize_row_norms(norms: Tensor) -> RowNormSummary:
    """Summarise per-neuron norms (see the module docstring for the formulas).

    Args:
        norms: 1-D tensor of row norms (e.g. from :func:`row_norms`).

    Returns:
        A :class:`RowNormSummary`, computed in float64.
    """
    r = norms.detach().reshape(-1).to(torch.float64)
    finite = torch.isfinite(r)
    num_nonfinite = int((~finite).sum().item())
    r = r[finite]
    if r.numel() == 0:
        return RowNormSummary(norms.numel(), num_nonfinite, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN)
    mean = r.mean().item()
    std = r.std(correction=0).item()
    lo, hi = r.min().item(), r.max().item()
    cv = std / mean if mean > 0 else _NAN
    ratio = lo / hi if hi > 0 else _NAN
    return RowNormSummary(norms.numel(), num_nonfinite, mean, std, cv, lo, hi, ratio)


def frobenius_from_row_norms(norms: Tensor) -> float:
    """``‖A‖_F = sqrt(Σ_i r_i²)`` from the row norms of ``A`` (``nan`` if any row is non-finite)."""
    r = norms.detach().reshape(-1).to(torch.float64)
    if not bool(torch.isfinite(r).all()):
        return _NAN
    return math.sqrt(r.square().sum().item())


def update_rms(delta: Tensor) -> float:
    """``‖ΔW‖_F / sqrt(numel)``; ``nan`` for an empty tensor or non-finite entries."""
    if delta.numel() == 0:
        return _NAN
    return frobenius_from_row_norms(row_norms(delta)) / math.sqrt(delta.numel())


def update_to_weight_ratio(delta: Tensor, weight: Tensor) -> float:
    """``‖ΔW‖_F / ‖W‖_F`` with ``W`` the weights before the step; ``nan`` when ``‖W‖_F = 0``."""
    w = frobenius_from_row_norms(row_norms(weight))
    return frobenius_from_row_norms(row_norms(delta)) / w if w > 0 else _NAN


@dataclass(frozen=True)
class UpdateStats:
    """Everything :class:`~lightning_muon.callbacks.UpdateNormMonitor` reports for one matrix.

    Attributes:
        rows: summary of the per-neuron update norms.
        rms: ``‖ΔW‖_F / sqrt(mn)`` (``nan`` if a row is non-finite).
        update_to_weight: ``‖ΔW‖_F / ‖W‖_F`` (``nan`` if a row is non-finite or ``‖W‖_F = 0``).
    """

    rows: RowNormSummary
    rms: float
    update_to_weight: float


def update_statistics(delta_rows: Tensor, weight_rows: Tensor, num_cols: int) -> UpdateStats:
    """Update statistics from row norms of ``ΔW`` and of ``W`` (before the step).

    Working from row norms makes the same function serve whole matrices and row-sharded ones whose
    per-shard row norms were gathered.

    Args:
        delta_rows: row norms of the update, length ``m``.
        weight_rows: row norms of the weights before the step, length ``m``.
        num_cols: ``n``, the number of columns of the matrix view.

    Returns:
        :class:`UpdateStats`.
    """
    numel = delta_rows.numel() * num_cols
    delta_f = frobenius_from_row_norms(delta_rows)
    weight_f = frobenius_from_row_norms(weight_rows)
    rms = delta_f / math.sqrt(numel) if numel > 0 else _NAN
    ratio = delta_f / weight_f if weight_f > 0 else _NAN
    return UpdateStats(summarize_row_norms(delta_rows), rms, ratio)
