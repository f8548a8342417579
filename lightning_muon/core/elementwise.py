"""Elementwise transforms: sign, second moments, the variance recursion and Adam-type ratios.

Example:
    >>> import torch
    >>> V = torch.zeros(3); X = torch.tensor([1.0, -2.0, 0.0])
    >>> second_moment_(V, X, 0.5).tolist()
    [0.5, 2.0, 0.0]
    >>> vs_direction(X, V, 1e-8).abs().max().item() < 2.0
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
    gamma: torch.Tensor, previous_mean: torch.Tensor, grad: torch.Tensor, beta: float
) -> torch.Tensor:
    """In place ``Γ ← β Γ + β(1-β)(M_{t-1} - G_t)²`` (Muon-NSR/VS; uses the mean *before* its update).

    With Adam's ``β1 = β2 = β`` this is exactly ``v_t - m_t²``, the gradient variance estimate.
    """
    diff = previous_mean - grad
    return gamma.mul_(beta).addcmul_(diff, diff, value=beta * (1.0 - beta))


def bias_correction(beta: float, step: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``1 - β^t`` in ``dtype`` for a (broadcastable) tensor of step counts ``t ≥ 1`` (computed in float64)."""
    return (1.0 - torch.pow(beta, step.to(torch.float64))).to(dtype)


def nsr_direction(
    m_tilde: torch.Tensor, gamma_hat: torch.Tensor, alpha: float, eps: float
) -> torch.Tensor:
    """Noise-to-signal rescaling ``M̃ / (sqrt(M̃² + α Γ̂) + ε)``, bounded in (-1, 1) (official Muon-NSR code)."""
    return m_tilde / (torch.sqrt(m_tilde.square().add_(gamma_hat, alpha=alpha)).add_(eps))


def vs_direction(m_tilde: torch.Tensor, gamma_hat: torch.Tensor, eps: float) -> torch.Tensor:
    """Variance scaling ``M̃ / (sqrt(Γ̂) + ε)`` (official Muon-VS code)."""
    return m_tilde / gamma_hat.sqrt().add_(eps)


def adam_direction(
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    correction1: torch.Tensor,
    correction2: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """The bias-corrected Adam ratio ``(m/c₁) / (sqrt(v/c₂) + ε)``."""
    return (exp_avg / correction1) / (exp_avg_sq / correction2).sqrt_().add_(eps)
