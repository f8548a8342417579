r"""The matrix functions of the reference tier, one matrix at a time.

Each function takes a single matrix ``X ∈ R^{m×n}`` (no stacks, no preallocated buffers) and
computes in ``X``'s dtype, so a float64 input gives a float64 answer.

* :func:`polar` and :func:`spectral_power` are the exact definitions through the SVD
  ``X = U Σ Vᵀ``, restricted to the numerical rank ``r`` (singular values above
  ``eps(dtype)·max(m, n)·σ_max``): ``polar(X) = U_r V_rᵀ``, ``Ψ_p(X) = U_r Σ_r^p V_rᵀ``.
* :func:`newton_schulz` is the quintic iteration the optimizers use in place of ``polar``.
* :func:`spectral_power_newton` is the official coupled iteration for ``Ψ_½`` and ``Ψ_¼``.
* :func:`scale_rule` is the magnitude ``s(m, n)`` of an update.

Example:
    >>> import torch
    >>> X = torch.randn(6, 10, dtype=torch.float64)
    >>> O = polar(X)
    >>> torch.allclose(O @ O.T, torch.eye(6, dtype=torch.float64))
    True
    >>> torch.allclose(spectral_power(X, 1.0), X)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..core.orthogonalize import NAMED_TABLES, custom_table
from ..core.spectral import inverse_fourth_root


def numerical_rank(S: torch.Tensor, dtype: torch.dtype, m: int, n: int) -> int:
    """How many singular values ``S`` (descending) exceed ``eps(dtype)·max(m, n)·σ_max``."""
    if S.numel() == 0 or S[0] == 0:
        return 0
    cutoff = torch.finfo(dtype).eps * max(m, n) * S[0]
    return int((cutoff < S).sum())


def spectral_power(X: torch.Tensor, p: float, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``Ψ_p(X) = U_r Σ_r^p V_rᵀ``: every kept singular value raised to ``p`` (``p = 0``: polar).

    ``dtype`` is the precision ``X`` was produced in (it sets the rank cutoff; default ``X``'s).
    """
    m, n = X.shape
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    r = numerical_rank(S, dtype or X.dtype, m, n)
    return U[:, :r] @ torch.diag(S[:r] ** p) @ Vh[:r]


def polar(X: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The polar factor ``U_r V_rᵀ``: the nearest semi-orthogonal matrix to ``X`` (zero for zero ``X``)."""
    return spectral_power(X, 0.0, dtype)


def coefficient_schedule(orthogonalizer: str | Sequence, steps: int) -> tuple[list, float]:
    """The ``(a, b, c)`` of each of ``steps`` iterations (the table's last row repeats) and the
    normalisation factor of the table (Polar Express divides by ``1.02·‖X‖_F``)."""
    table = (
        NAMED_TABLES[orthogonalizer]
        if isinstance(orthogonalizer, str)
        else custom_table(orthogonalizer)
    )
    return list(table.schedule(steps)), table.norm_scale


def newton_schulz(
    X: torch.Tensor, orthogonalizer: str | Sequence, steps: int, eps: float
) -> torch.Tensor:
    r"""Approximate ``polar(X)`` by ``steps`` odd quintic iterations.

    .. math::

        Y_0 = X / (c·‖X‖_F + ε), \qquad A = Y_k Y_kᵀ, \qquad Y_{k+1} = a_k Y_k + (b_k A + c_k A²) Y_k

    Each step maps every singular value ``y ↦ a y + b y³ + c y⁵``. A tall ``X`` is handled through
    its transpose (the same iterates, with the smaller Gram matrix).
    """
    m, n = X.shape
    if m > n:
        return newton_schulz(X.T, orthogonalizer, steps, eps).T
    schedule, norm_scale = coefficient_schedule(orthogonalizer, steps)
    Y = X / (norm_scale * torch.linalg.matrix_norm(X) + eps)
    for a, b, c in schedule:
        A = Y @ Y.T
        Y = a * Y + (b * A + c * A @ A) @ Y
    return Y


def spectral_power_newton(X: torch.Tensor, p: float, iters: int, eps: float) -> torch.Tensor:
    r"""``Ψ_½`` and ``Ψ_¼`` as the official code computes them, with the Gram matrix of the short side:

    .. math::

        Ψ_{1/2}(X) = X (XᵀX)^{-1/4} \;(n ≤ m), \qquad (XXᵀ)^{-1/4} X \;(n > m), \qquad Ψ_{1/4} = Ψ_{1/2} ∘ Ψ_{1/2}

    The inverse fourth root comes from two coupled Newton square-root iterations on a Tikhonov
    regularised Gram matrix (:func:`lightning_muon.core.spectral.coupled_sqrt_invsqrt`, already
    written per matrix), so singular values below about ``1e-2·RMS(σ)`` are not resolved.
    """
    if p == 0.25:
        return spectral_power_newton(spectral_power_newton(X, 0.5, iters, eps), 0.5, iters, eps)
    m, n = X.shape
    if n <= m:
        return X @ inverse_fourth_root(X.T @ X, iters, eps)
    return inverse_fourth_root(X @ X.T, iters, eps) @ X


def scale_rule(U: torch.Tensor, rule: str, rms_target: float) -> torch.Tensor:
    """``s(m, n)·U`` for the scale ``rule`` of an ``m × n`` update.

    ``"keller"`` ``sqrt(max(1, m/n))``, ``"moonlight"`` ``rms_target·sqrt(max(m, n))``,
    ``"spectral"`` ``sqrt(m/n)``, ``"rms"`` ``rms_target·sqrt(mn)/‖U‖_F`` (RMS exactly
    ``rms_target``; a zero ``U`` stays zero), ``"none"`` 1.
    """
    m, n = U.shape
    if rule == "keller":
        return U * math.sqrt(max(1.0, m / n))
    if rule == "moonlight":
        return U * rms_target * math.sqrt(max(m, n))
    if rule == "spectral":
        return U * math.sqrt(m / n)
    if rule == "rms":
        norm = torch.linalg.matrix_norm(U)
        return U * (rms_target * math.sqrt(m * n) / norm) if norm > 0 else U
    if rule == "none":
        return U
    raise ValueError(f"Invalid scale: {rule!r}")
