"""SpectralMuon: the ``Ψ_p(U) = U_s Σ^p V_sᵀ`` family (arXiv 2602.04669, official BeyondMuon code)."""

from __future__ import annotations

from typing import Any

import torch

from ..core.elementwise import adam_direction, bias_correction, second_moment_
from ..core.momentum import ema_, heavy_ball_
from ..core.orthogonalizers import Orthogonalizer, SpectralPower
from ..core.scaling import SCALE_RULES
from ..core.validation import check_choice
from ..engine.step import MatrixContext, MatrixStep
from ..engine.tensors import state_zeros
from .base import MuonFamilyOptimizer
from .hyperparameters import OrthogonalizerSpec, own_arguments
from .muon import apply_scale


class SpectralStep(MatrixStep):
    """Adam ratio or heavy-ball momentum, ``Ψ_p``, then the scale rule (``"auto"``: Keller for p = 0)."""

    def init_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.h["direction"] == "momentum":
            return {"momentum_buffer": state_zeros(p)}
        return {"exp_avg": state_zeros(p), "exp_avg_sq": state_zeros(p)}

    def begin(self, G: torch.Tensor, S: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.h["direction"] == "momentum":
            return heavy_ball_(S["momentum_buffer"], G, self.h["momentum"], first=S["step"] == 1)
        beta1, beta2 = self.h["betas"]
        m = ema_(S["exp_avg"], G, beta1)
        v = second_moment_(S["exp_avg_sq"], G, beta2)
        c1, c2 = bias_correction(beta1, S["step"], G.dtype), bias_correction(beta2, S["step"], G.dtype)
        return adam_direction(m, v, c1, c2, self.h["eps"])

    def finish(self, O: torch.Tensor, S: dict[str, torch.Tensor], ctx: MatrixContext) -> torch.Tensor:
        rule = self.h["scale"]
        if rule == "auto":
            rule = "keller" if self.h["power"] == 0.0 else "none"
        return apply_scale(O, {**self.h, "scale": rule}, ctx)


class SpectralMuon(MuonFamilyOptimizer):
    r"""Spectral power updates ``W ← W(1-ηλ) - η·s·Ψ_p(D)`` with ``p ∈ {0, ¼, ½, 1}``.

    The direction ``D`` is either the bias-corrected Adam ratio (``direction="adam"``, the paper's
    "Adam family": ``m̂/(sqrt(v̂) + ε)``, betas (0.9, 0.95)) or heavy-ball momentum
    (``direction="momentum"``, "mSGD family": ``B ← μB + G``, ``B_1 = G``, μ = 0.9). ``p = 0`` is the
    polar factor by Newton–Schulz (15 Jordan steps and ``sqrt(max(1, m/n))`` scaling in the official
    code: ``direction="momentum", power=0`` is Muon), ``p = 1`` leaves ``D`` unchanged
    (``direction="adam", power=1`` is AdamW), ``p = ½`` is ``D (DᵀD)^{-1/4}`` by coupled Newton
    iterations, ``p = ¼`` applies it twice. ``scale="auto"`` is the official choice: Keller for
    ``p = 0``, none otherwise. ``orthogonalizer="svd"`` makes every power exact (as
    ``spectral_method="svd"`` does for ``p > 0``). Defaults: ``power=0.5, direction="adam"`` (AdamS),
    lr 1e-2, wd 0, vector lr 3e-4 (``adamw_lr_ratio=0.03``).

    Args:
        momentum: μ of the heavy-ball momentum (``direction="momentum"``).
        betas: Adam (β1, β2) of the direction (``direction="adam"``).
        eps: Adam ε of the direction.
        ns_steps: Newton–Schulz iterations for ``p = 0``.
        orthogonalizer: orthogonalizer for ``p = 0`` (``"svd"``: every power exact).
        scale: ``"auto"`` or a rule of :mod:`lightning_muon.core.scaling`.

    Example:
        >>> import torch, torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> opt = SpectralMuon(model, power=0.25)
        >>> model(torch.randn(5, 8)).sum().backward(); opt.step()
        >>> sorted(opt.state[model[0].weight])
        ['exp_avg', 'exp_avg_sq', 'step']
    """

    algorithm = "spectral_muon"
    step_class = SpectralStep
    checks = {"scale": lambda name, value: check_choice(name, value, ("auto", *SCALE_RULES))}

    def __init__(
        self, params: Any, lr: float = 1e-2, power: float = 0.5, direction: str = "adam",
        momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
        weight_decay: float = 0.0, spectral_method: str = "newton", spectral_iters: int = 15,
        spectral_eps: float = 1e-6, ns_steps: int = 15, orthogonalizer: OrthogonalizerSpec = "jordan",
        scale: str = "auto", rms_target: float = 0.2, adamw_lr_ratio: float = 0.03, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(params, own_arguments(locals()), **kwargs)

    def orthogonalizer(self, group: dict[str, Any]) -> Orthogonalizer:
        """Newton–Schulz (or the exact polar factor) for ``p = 0``; ``Ψ_p`` otherwise."""
        if group["power"] == 0.0:
            return super().orthogonalizer(group)
        exact = group["orthogonalizer"] == "svd" or group["spectral_method"] == "svd"
        method = "svd" if exact else "newton"
        return SpectralPower(float(group["power"]), method, group["spectral_iters"], group["spectral_eps"])
