"""Muon-NSR and Muon-VS: variance-adaptive inputs to Newton–Schulz (arXiv 2601.14603, official code)."""

from __future__ import annotations

from typing import Any

import torch

from ..core.elementwise import bias_correction, nsr_direction_, variance_, vs_direction_
from ..core.momentum import ema_
from ..core.workspace import thread_workspace
from ..engine.step import MatrixContext
from ..engine.tensors import state_zeros
from .base import MuonFamilyOptimizer
from .hyperparameters import OrthogonalizerSpec, own_arguments
from .muon import MuonStep, apply_scale

#: The arguments Muon-NSR and Muon-VS share, in their words.
VARIANCE_ARG_DOCS = {
    "momentum": "β of the momentum and the variance.",
    "nesterov": "use the look-ahead ``G + β/(1-β)·M̂`` (always on in the official code).",
    "eps": "ε outside the square root of the denominator.",
    "scale": 'lr scale rule (``"moonlight"``: NanoGPT/Suite A code; ``"keller"``: Suite B code).',
}


class VarianceAdaptiveStep(MuonStep):
    r"""Momentum, variance Γ and the bias-corrected look-ahead; subclasses map ``(M̃, Γ̂)`` to ``X``.

    .. math::

        Γ_t &= β Γ_{t-1} + β(1-β)(M_{t-1} - G_t)^2, \qquad M_t = β M_{t-1} + (1-β) G_t \\
        M̂ &= M_t/(1-β^t), \quad Γ̂ = Γ_t/(1-β^t), \quad M̃ = G_t + \tfrac{β}{1-β} M̂

    (``nesterov=False`` uses ``M̃ = M̂``).
    """

    def init_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"momentum_buffer": state_zeros(p), "variance": state_zeros(p)}

    def lookahead_(
        self, G: torch.Tensor, S: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Update ``M``, ``Γ`` and write ``M̃`` over ``G`` (the executor's scratch copy).

        Returns ``(M̃, s, scratch)`` with ``s = 1/(1-β^t)`` (``Γ̂ = sΓ``, shape ``(N, 1, 1)``) and
        one workspace buffer of ``G``'s shape for the caller's denominator: the whole input is
        written once, with one scratch of its size and no other temporary.
        """
        beta = self.h["momentum"]
        M, gamma = S["momentum_buffer"], S["variance"]
        scratch = thread_workspace().get("variance_direction", G.shape, G.dtype, G.device)
        variance_(gamma, M, G, beta, scratch)
        ema_(M, G, beta)
        inverse = bias_correction(beta, S["step"], G.dtype).reciprocal_()
        if self.h["nesterov"]:
            G.addcmul_(M, inverse, value=beta / (1.0 - beta))
        else:
            torch.mul(M, inverse, out=G)
        return G, inverse, scratch

    def finish(
        self, O: torch.Tensor, S: dict[str, torch.Tensor], ctx: MatrixContext
    ) -> torch.Tensor:
        return apply_scale(O, self.h, ctx)


class MuonNSRStep(VarianceAdaptiveStep):
    """``X = M̃ / (sqrt(M̃² + αΓ̂) + ε)``."""

    def begin(self, G: torch.Tensor, S: dict[str, torch.Tensor]) -> torch.Tensor:
        m_tilde, inverse, scratch = self.lookahead_(G, S)
        return nsr_direction_(
            m_tilde, S["variance"], self.h["alpha"], self.h["eps"], inverse, scratch
        )


class MuonVSStep(VarianceAdaptiveStep):
    """``X = M̃ / (sqrt(Γ̂) + ε)``."""

    def begin(self, G: torch.Tensor, S: dict[str, torch.Tensor]) -> torch.Tensor:
        m_tilde, inverse, scratch = self.lookahead_(G, S)
        return vs_direction_(m_tilde, S["variance"], self.h["eps"], inverse, scratch)


class MuonNSR(MuonFamilyOptimizer):
    r"""Muon-NSR: noise-to-signal rescaled input ``X = M̃ / (sqrt(M̃² + αΓ̂) + ε)``, then ``NS_5`` and Moonlight scaling.

    ``M̃`` and ``Γ̂`` are the bias-corrected look-ahead and variance of :class:`VarianceAdaptiveStep`.
    With ``α = 1`` and no look-ahead this is Newton–Schulz of the Adam(β1 = β2 = β) direction
    ``m/sqrt(v)`` (since ``v - m² = Γ``); larger ``α`` suppresses noisy coordinates more. Defaults follow
    the official code's LLaMA suites (α = 1000, β = 0.95, ε = 1e-8, wd 0.1, Moonlight scaling) except
    the lr: 1.6e-2 shared with the AdamW branch, chosen on the efficiency benchmark's grids (``docs/benchmarks/efficiency.md``: litgpt GPT 4×128 on byte-level standard-library source, 400 steps, 3 seeds): 61% [56–64] of AdamW's
    steps (best cell 57%; the suites' lr 1e-3 never reaches AdamW's final loss: 1.938 vs 1.845).
    The suites' lr: ``MuonNSR(params, **MuonNSR.paper_settings)``.

    Args:
        alpha: weight α of the variance against the squared signal (official default 1000).

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
        >>> MuonNSR(net.named_parameters(), alpha=10.0).routing.names("muon")
        ['0.weight', '2.weight']
    """

    algorithm = "muon_nsr"
    step_class = MuonNSRStep
    paper_settings = {"lr": 1e-3}
    paper_source = "Muon-NSR official code (LLaMA suites)"
    arg_docs = VARIANCE_ARG_DOCS

    def __init__(
        self, params: Any, lr: float = 1.6e-2, weight_decay: float = 0.1, alpha: float = 1000.0,
        momentum: float = 0.95, nesterov: bool = True, eps: float = 1e-8,
        scale: str = "moonlight", rms_target: float = 0.2, ns_steps: int = 5,
        orthogonalizer: OrthogonalizerSpec = "jordan", **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(params, own_arguments(locals()), **kwargs)


class MuonVS(MuonFamilyOptimizer):
    r"""Muon-VS: variance-scaled input ``X = M̃ / (sqrt(Γ̂) + ε)`` ("sign × SNR"), then ``NS_5``.

    The large-``α`` limit of Muon-NSR up to a global factor that Newton–Schulz removes. Defaults as
    :class:`MuonNSR` (it has no α): lr 1.6e-2, 62% [57–66] of AdamW's steps on the efficiency
    benchmark (best cell 59%; the official lr 1e-3: not reached, 1.936).

    Args:
        lr: learning rate η of both branches (the official LLaMA suites': 1e-3).

    Example:
        >>> import torch
        >>> W = torch.nn.Parameter(torch.randn(4, 6))
        >>> opt = MuonVS([W], vocab_size=100)  # plain tensors: routed by shape
        >>> opt.param_groups[0]["nesterov"], opt.param_groups[0]["scale"]
        (True, 'moonlight')
    """

    algorithm = "muon_vs"
    step_class = MuonVSStep
    paper_settings = {"lr": 1e-3}
    paper_source = "Muon-VS official code (LLaMA suites)"
    arg_docs = VARIANCE_ARG_DOCS

    def __init__(
        self, params: Any, lr: float = 1.6e-2, momentum: float = 0.95, nesterov: bool = True,
        weight_decay: float = 0.1, eps: float = 1e-8, ns_steps: int = 5,
        orthogonalizer: OrthogonalizerSpec = "jordan", scale: str = "moonlight", rms_target: float = 0.2, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(params, own_arguments(locals()), **kwargs)
