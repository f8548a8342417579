"""The spectral power family ``Ψ_p(U) = U_s Σ^p V_sᵀ`` ("Delving into Muon and Beyond", arXiv 2602.04669).

For ``U = U_s Σ V_sᵀ``: ``p = 1`` is the identity, ``p = 0`` the polar factor (Muon),
``p = ½`` and ``p = ¼`` interpolate. As in the official code, ``Ψ_½`` uses the Gram matrix
of the short side,

.. math::

    Ψ_{1/2}(U) = U (UᵀU)^{-1/4} \\;(n ≤ m), \\qquad (UUᵀ)^{-1/4} U \\;(n > m),

with the inverse fourth root from two coupled Newton (Denman–Beavers type) square-root
iterations on a Tikhonov-regularised Gram matrix; ``Ψ_¼ = Ψ_½ ∘ Ψ_½``.

Example:
    >>> import torch
    >>> U = torch.randn(2, 6, 10, dtype=torch.float64)
    >>> S = torch.linalg.svdvals(spectral_power(U, 0.5, method="svd"))
    >>> torch.allclose(S, torch.linalg.svdvals(U).sqrt())
    True
"""

from __future__ import annotations

import torch

SPECTRAL_POWERS = (0.0, 0.25, 0.5, 1.0)


def coupled_sqrt_invsqrt(
    A: torch.Tensor, iters: int = 15, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A_r^{1/2}, A_r^{-1/2})`` for symmetric PSD ``A (..., n, n)`` by the coupled Newton iteration.

    ``A_r = A + (eps + 1e-4·tr(A)/n)·I`` (the official code's floor), scaled by ``s = ‖A_r‖_F``
    so its eigenvalues lie in ``(0, 1]``; then ``T = ½(3I − ZY), Y ← YT, Z ← TZ`` with periodic
    symmetrisation, exactly as in the reference implementation.
    """
    n = A.size(-1)
    eye = torch.eye(n, dtype=A.dtype, device=A.device).expand_as(A)
    trace = A.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    A_r = A + (eps + 1e-4 * trace / n) * eye
    s = torch.linalg.matrix_norm(A_r, keepdim=True)
    Y = A_r / s
    Z = eye.clone()
    every = max(1, min(iters // 3, 5))
    for k in range(iters):
        T = 0.5 * (3.0 * eye - Z @ Y)
        Y = Y @ T
        Z = T @ Z
        if k > 0 and k % every == 0:
            Y = 0.5 * (Y + Y.mT)
            Z = 0.5 * (Z + Z.mT)
    Y = 0.5 * (Y + Y.mT)
    Z = 0.5 * (Z + Z.mT)
    return Y * s.sqrt(), Z / s.sqrt()


def inverse_fourth_root(A: torch.Tensor, iters: int = 15, eps: float = 1e-6) -> torch.Tensor:
    """``A^{-1/4}`` as the square root of ``A^{-1/2}`` (two coupled iterations, as in the official code)."""
    _, inv_sqrt = coupled_sqrt_invsqrt(A, iters, eps)
    root, _ = coupled_sqrt_invsqrt(inv_sqrt, iters, eps)
    return root


def _half_power_newton(U: torch.Tensor, iters: int, eps: float) -> torch.Tensor:
    m, n = U.shape[-2:]
    if n <= m:
        return U @ inverse_fourth_root(U.mT @ U, iters, eps)
    return inverse_fourth_root(U @ U.mT, iters, eps) @ U


def numerical_rank_mask(
    S: torch.Tensor, dtype: torch.dtype, size: int, rtol: float | None = None
) -> torch.Tensor:
    """Which singular values ``S (..., k)`` count: ``σ > rtol·σ_max``, per matrix.

    ``rtol`` defaults to ``eps(dtype)·size`` (``size = max(m, n)``; ``dtype`` is the input's, not
    the float64 of the SVD): below it a singular value is round-off of the input, not signal. The
    exact polar factor (:func:`~lightning_muon.core.orthogonalize.exact_polar`) drops the same ones,
    and a zero matrix keeps none.
    """
    if rtol is None:
        rtol = torch.finfo(dtype).eps * size
    largest = S.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(S.dtype).tiny)
    return rtol * largest < S


def exact_spectral_power(U: torch.Tensor, p: float, rtol: float | None = None) -> torch.Tensor:
    """``Ψ_p(U) = U_r Σ_r^p V_rᵀ`` by SVD in float64, on the numerical rank ``r`` only.

    Singular values at or below ``rtol·σ_max`` (:func:`numerical_rank_mask`) are dropped before
    the power: ``σ^p`` of a round-off value ``σ ≈ eps·σ_max`` is ``eps^p·σ_max^p``, which for
    ``p = ¼`` and an fp32 input is ~2% of the signal per dropped direction. ``p = 0`` is the exact
    polar factor. Returns ``U``'s dtype.

    Example:
        >>> import torch
        >>> U = (torch.randn(16, 2) @ torch.randn(2, 16)).float()  # rank 2
        >>> out = exact_spectral_power(U, 0.25)
        >>> int((torch.linalg.svdvals(out.double()) > 1e-3).sum())
        2
    """
    if U.numel() == 0:
        return torch.zeros_like(U)
    Us, S, Vh = torch.linalg.svd(U.to(torch.float64), full_matrices=False)
    keep = numerical_rank_mask(S, U.dtype, max(U.shape[-2:]), rtol)
    powered = torch.where(keep, S.pow(p), torch.zeros_like(S))
    return ((Us * powered.unsqueeze(-2)) @ Vh).to(U.dtype)


def spectral_power(
    U: torch.Tensor,
    p: float,
    method: str = "newton",
    iters: int = 15,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``Ψ_p(U)`` for ``p ∈ {¼, ½, 1}`` on stacked matrices ``(..., m, n)`` (``p = 0``: use Newton–Schulz).

    Args:
        U: input matrices.
        p: the spectral power.
        method: ``"newton"`` (the official coupled iteration, fp32 or the input dtype) or
            ``"svd"`` (exact, float64, on the numerical rank: :func:`exact_spectral_power`).
        iters: coupled-iteration steps.
        eps: Tikhonov floor of the Gram matrix.
    """
    if p not in SPECTRAL_POWERS or p == 0.0:
        raise ValueError(f"Invalid spectral power p: {p}; spectral_power handles 0.25, 0.5 and 1")
    if method not in ("newton", "svd"):
        raise ValueError(f"Invalid spectral method: {method!r}; expected 'newton' or 'svd'")
    if p == 1.0 or U.numel() == 0:
        return U.clone()
    if method == "svd":
        return exact_spectral_power(U, p)
    out = _half_power_newton(U, iters, eps)
    if p == 0.25:
        out = _half_power_newton(out, iters, eps)
    return out
