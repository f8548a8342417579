"""Momentum transforms.

All Muon-family methods here use the exponential moving average form

.. math::  M_t = β M_{t-1} + (1-β) G_t,

and optionally its Nesterov look-ahead ``X_t = (1-β) G_t + β M_t``. The heavy-ball ("SGD-sum")
form ``B_t = μ B_{t-1} + G_t`` differs from the EMA only by the factor ``1-β`` (with ``B_0 = 0``),
which Newton–Schulz removes; it is kept for the spectral family, whose ``p > 0`` powers see magnitudes.

Example:
    >>> import torch
    >>> M = torch.zeros(2, 3); G = torch.ones(2, 3)
    >>> round(ema_(M, G, 0.9)[0, 0].item(), 6)
    0.1
    >>> round(nesterov(G, M, 0.9)[0, 0].item(), 6)
    0.19
"""

from __future__ import annotations

import torch


def ema_(buffer: torch.Tensor, grad: torch.Tensor, beta: float) -> torch.Tensor:
    """In place ``M ← β M + (1-β) G``; returns ``M``."""
    return buffer.lerp_(grad, 1.0 - beta)


def nesterov(grad: torch.Tensor, buffer: torch.Tensor, beta: float) -> torch.Tensor:
    """The EMA Nesterov look-ahead ``(1-β) G + β M`` (a new tensor; ``grad`` is not modified)."""
    return grad.lerp(buffer, beta)


def nesterov_(grad: torch.Tensor, buffer: torch.Tensor, beta: float) -> torch.Tensor:
    """:func:`nesterov` written into ``grad`` (a scratch copy of the gradient); returns it."""
    return grad.lerp_(buffer, beta)


def heavy_ball_(
    buffer: torch.Tensor, grad: torch.Tensor, mu: float, first: torch.Tensor
) -> torch.Tensor:
    """In place ``B ← μ B + G``, except ``B ← G`` where ``first`` is true (torch.optim.SGD's first step).

    ``first`` broadcasts against ``buffer`` (one flag per stacked matrix).
    """
    factor = first.logical_not().to(buffer.dtype) * mu
    buffer.mul_(factor).add_(grad)
    return buffer
