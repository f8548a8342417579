r"""The reference tier: Muon's math as a plain fp32 loop, one matrix at a time.

This is the implementation most people write first, and the floor the fast path must beat: for
each matrix, in fp32, with ``torch.mm``/``torch.addmm`` and nothing stacked or preallocated,

.. math::

    M &← β M + (1-β) G, \qquad X = (1-β) G + β M \;\text{(Nesterov)} \\
    Y_0 &= X / (‖X‖_F + ε), \quad A = Y_k Y_kᵀ, \quad Y_{k+1} = a Y_k + (b A + c A^2) Y_k \\
    W &← W(1 - ηλ) - η \sqrt{\max(1, m/n)}\, Y_5

with Keller Jordan's coefficients ``(a, b, c) = (3.4445, -4.7750, 2.0315)``. It is the same update
as :class:`lightning_muon.Muon` with its defaults and ``ns_dtype="float32"``; a test checks it.

Example:
    >>> import torch
    >>> W = torch.nn.Parameter(torch.randn(8, 16))
    >>> W.grad = torch.randn(8, 16)
    >>> opt = ReferenceMuon([W], lr=0.02)
    >>> opt.step()
    >>> opt.state[W]["momentum_buffer"].shape
    torch.Size([8, 16])
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

JORDAN_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def reference_newton_schulz(X: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Keller Jordan's quintic Newton–Schulz on one fp32 matrix ``X (m, n)``."""
    a, b, c = JORDAN_COEFFICIENTS
    tall = X.size(0) > X.size(1)
    Y = X.T if tall else X
    Y = Y / (Y.norm() + eps)
    for _ in range(steps):
        A = Y @ Y.T
        B = torch.addmm(A, A, A, beta=b, alpha=c)
        Y = torch.addmm(Y, B, Y, beta=a)
    return Y.T if tall else Y


class ReferenceMuon(torch.optim.Optimizer):
    """Plain per-matrix fp32 Muon (no routing, no AdamW branch): every parameter must be 2-D or more.

    Args:
        params: matrix parameters (conv weights are flattened to ``(out, in·k·…)``).
        lr: learning rate η.
        momentum: β of the momentum EMA.
        nesterov: use the Nesterov look-ahead as the Newton–Schulz input.
        weight_decay: decoupled weight decay λ.
        ns_steps: Newton–Schulz iterations.
        eps: Newton–Schulz normalisation epsilon.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        eps: float = 1e-7,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, ns_steps=ns_steps, eps=eps
        )  # fmt: skip
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(
                        f"ReferenceMuon needs matrix parameters, got shape {tuple(p.shape)}"
                    )

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One update of every parameter that has a gradient."""
        for group in self.param_groups:
            beta, lr = group["momentum"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p, dtype=torch.float32)
                buf = state["momentum_buffer"]
                g = p.grad.float()
                buf.lerp_(g, 1.0 - beta)
                x = g.lerp(buf, beta) if group["nesterov"] else buf
                m = p.size(0)
                n = p.numel() // m
                o = reference_newton_schulz(x.reshape(m, n), group["ns_steps"], group["eps"])
                if group["weight_decay"]:
                    p.mul_(1.0 - lr * group["weight_decay"])
                p.add_(o.view_as(p).to(p.dtype), alpha=-lr * math.sqrt(max(1.0, m / n)))
