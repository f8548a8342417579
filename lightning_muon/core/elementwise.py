"""Elementwise transforms: sign, second moments, the variance recursion and Adam-type ratios.

Example:
    >>> import torch
    >>> V = torch.zeros(3); X = torch.tensor([1.0, -2.0, 0.0])
    >>> second_moment_(V, X, 0.5).tolist()
    [0.5, 2.0, 0.0]
    >>> vs_direction_(X.clone(), V, 1e-8).abs().max().item() < 2.0
    True
"""

from __future__ import annotations

import torch


def sign(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` with ``sign(0) = 0`` (AdaMuon's sign stabilisation)."""
    return torch.sign(x)


def second_moment_(v: torch.Tensor, x: torch.Tensor, beta: float) -> torch.Tensor:
    """In place ``V ← β V + (1-β) x ⊙ x``; returns ``V``."""
    return v.mul_(beta).addcmul_(x, x, value=1.0 - beta)


def variance_(
    gamma: torch.Tensor,
    previous_mean: torch.Tensor,
    grad: torch.Tensor,
    beta: float,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """In place ``Γ ← β Γ + β(1-β)(M_{t-1} - G_t)²`` (Muon-NSR/VS; uses the mean *before* its update).

    With Adam's ``β1 = β2 = β`` this is exactly ``v_t - m_t²``, the gradient variance estimate.
    ``scratch`` (the shape of ``grad``) holds ``M_{t-1} - G_t``; without it a temporary does.
    """
    diff = (
        torch.sub(previous_mean, grad, out=scratch) if scratch is not None else previous_mean - grad
    )
    return gamma.mul_(beta).addcmul_(diff, diff, value=beta * (1.0 - beta))


def bias_correction(beta: float, step: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``1 - β^t`` in ``dtype`` for a (broadcastable) tensor of step counts ``t ≥ 1`` (computed in float64)."""
    return (1.0 - torch.pow(beta, step.to(torch.float64))).to(dtype)


def _scaled(
    gamma: torch.Tensor, factor: float | torch.Tensor, scratch: torch.Tensor | None
) -> torch.Tensor:
    """``factor · Γ`` in ``scratch`` (a fresh tensor without one)."""
    return torch.mul(gamma, factor, out=scratch) if scratch is not None else gamma * factor


def nsr_direction_(
    m_tilde: torch.Tensor,
    gamma: torch.Tensor,
    alpha: float,
    eps: float,
    gamma_scale: float | torch.Tensor = 1.0,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noise-to-signal rescaling in place, ``M̃ ← M̃ / (sqrt(M̃² + α s Γ) + ε)``, bounded in (-1, 1)
    (official Muon-NSR code; ``s Γ = Γ̂``, the bias-corrected variance, with ``s = 1/(1-β^t)``
    broadcastable). The denominator lives in ``scratch`` when given: no temporary. Returns ``M̃``."""
    denominator = _scaled(gamma, gamma_scale * alpha, scratch).addcmul_(m_tilde, m_tilde)
    return m_tilde.div_(denominator.sqrt_().add_(eps))


def vs_direction_(
    m_tilde: torch.Tensor,
    gamma: torch.Tensor,
    eps: float,
    gamma_scale: float | torch.Tensor = 1.0,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """Variance scaling in place, ``M̃ ← M̃ / (sqrt(s Γ) + ε)`` (official Muon-VS code; ``s`` as in
    :func:`nsr_direction_`). Returns ``M̃``."""
    return m_tilde.div_(_scaled(gamma, gamma_scale, scratch).sqrt_().add_(eps))


def adam_direction(
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    correction1: torch.Tensor,
    correction2: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """The bias-corrected Adam ratio ``(m/c₁) / (sqrt(v/c₂) + ε)``."""
    return (exp_avg / correction1) / (exp_avg_sq / correction2).sqrt_().add_(eps)
