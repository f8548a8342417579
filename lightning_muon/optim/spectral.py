"""SpectralMuon: the ``Ψ_p(U) = U_s Σ^p V_sᵀ`` family (arXiv 2602.04669, official BeyondMuon code)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..core.elementwise import adam_direction, bias_correction, second_moment_
from ..core.momentum import ema_, heavy_ball_
from ..core.normalize import MatrixSum
from ..core.spectral import SPECTRAL_POWERS, spectral_power
from .base import MuonFamilyOptimizer, state_zeros
from .muon import apply_scale
from .validation import check_betas, check_choice, check_int, check_positive, check_range

DIRECTIONS = ("adam", "momentum")


class SpectralMuon(MuonFamilyOptimizer):
    r"""Spectral power updates ``W ← W(1-ηλ) - η·s·Ψ_p(D)`` with ``p ∈ {0, ¼, ½, 1}``.

    The direction ``D`` is either the bias-corrected Adam ratio (``direction="adam"``, the paper's
    "Adam family": ``m̂/(sqrt(v̂) + ε)``, betas (0.9, 0.95)) or heavy-ball momentum
    (``direction="momentum"``, "mSGD family": ``B ← μB + G``, ``B_1 = G``, μ = 0.9). ``p = 0`` is the
    polar factor by Newton–Schulz (15 Jordan steps and ``sqrt(max(1, m/n))`` scaling in the official
    code: ``direction="momentum", power=0`` is Muon), ``p = 1`` leaves ``D`` unchanged
    (``direction="adam", power=1`` is AdamW), ``p = ½`` is ``D (DᵀD)^{-1/4}`` by coupled Newton
    iterations, ``p = ¼`` applies it twice. ``scale="auto"`` is the official choice: Keller for
    ``p = 0``, none otherwise. Defaults: ``power=0.5, direction="adam"`` (AdamS), lr 1e-2, wd 0,
    vector lr 3e-4 (``adamw_lr_ratio=0.03``).

    Args:
        params: an ``nn.Module``, ``named_parameters()``, tensors, or param groups with ``branch``.
        lr: learning rate η.
        power: the spectral power p, one of 0, 0.25, 0.5, 1.
        direction: ``"adam"`` or ``"momentum"``.
        momentum: μ of the heavy-ball momentum (``direction="momentum"``).
        betas: Adam (β1, β2) of the direction (``direction="adam"``).
        eps: Adam ε of the direction.
        weight_decay: decoupled weight decay λ.
        spectral_method: ``"newton"`` (official coupled iteration) or ``"svd"`` (exact, float64).
        spectral_iters: coupled Newton iterations.
        spectral_eps: Tikhonov floor of the Gram matrix.
        ns_steps: Newton–Schulz iterations for ``p = 0``.
        orthogonalizer: orthogonalizer for ``p = 0``.
        scale: ``"auto"`` or a rule of :mod:`lightning_muon.core.scaling`.
        rms_target: update RMS of ``"moonlight"`` and ``"rms"``.
        ns_eps: epsilon of the Newton–Schulz input normalisation.
        ns_dtype: Newton–Schulz compute dtype; ``None`` picks by device.
        adamw_lr_ratio: AdamW branch lr as a multiple of the group lr.
        adamw_betas: AdamW (β1, β2).
        adamw_eps: AdamW epsilon.
        adamw_weight_decay: AdamW branch decoupled weight decay.
        nonfinite: ``"raise"`` or ``"skip"`` on a non-finite gradient.
        vocab_size: routing hint for plain tensors.

    Example:
        >>> import torch, torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> opt = SpectralMuon(model, power=0.25)
        >>> model(torch.randn(5, 8)).sum().backward()
        >>> opt.step()
        >>> sorted(opt.state[model[0].weight])
        ['exp_avg', 'exp_avg_sq', 'step']
    """

    algorithm = "spectral_muon"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        power: float = 0.5,
        direction: str = "adam",
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        spectral_method: str = "newton",
        spectral_iters: int = 15,
        spectral_eps: float = 1e-6,
        ns_steps: int = 15,
        orthogonalizer: str | Sequence[tuple[float, float, float]] = "jordan",
        scale: str = "auto",
        rms_target: float = 0.2,
        ns_eps: float = 1e-7,
        ns_dtype: str | None = None,
        adamw_lr_ratio: float = 0.03,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
        nonfinite: str = "raise",
        vocab_size: int | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, power=power, direction=direction, momentum=momentum, betas=betas, eps=eps,
            weight_decay=weight_decay, spectral_method=spectral_method, spectral_iters=spectral_iters,
            spectral_eps=spectral_eps, ns_steps=ns_steps, orthogonalizer=orthogonalizer, scale=scale,
            rms_target=rms_target, ns_eps=ns_eps, ns_dtype=ns_dtype, adamw_lr_ratio=adamw_lr_ratio,
            adamw_betas=adamw_betas, adamw_eps=adamw_eps, adamw_weight_decay=adamw_weight_decay,
        )  # fmt: skip
        super().__init__(params, defaults, vocab_size=vocab_size, nonfinite=nonfinite)

    def _validate_algorithm(self, group: dict[str, Any]) -> None:
        if isinstance(group["power"], int | float) and not isinstance(group["power"], bool):
            group["power"] = float(group["power"])
        check_choice("power", group["power"], SPECTRAL_POWERS)
        check_choice("direction", group["direction"], DIRECTIONS)
        check_range("momentum", group["momentum"], 0.0, 1.0)
        check_betas("betas", group["betas"])
        check_positive("eps", group["eps"])
        check_choice("spectral_method", group["spectral_method"], ("newton", "svd"))
        check_int("spectral_iters", group["spectral_iters"], 1, 200)
        check_positive("spectral_eps", group["spectral_eps"])
        self._validate_orthogonalizer(
            {**group, "scale": "none" if group["scale"] == "auto" else group["scale"]}
        )

    def _init_matrix_state(
        self, p: torch.Tensor, shape: tuple[int, int], group: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        if group["direction"] == "momentum":
            return {"momentum_buffer": state_zeros(p)}
        return {
            "exp_avg": state_zeros(p),
            "exp_avg_sq": state_zeros(p),
        }

    def _direction(
        self, G: torch.Tensor, S: dict[str, torch.Tensor], group: dict[str, Any]
    ) -> torch.Tensor:
        if group["direction"] == "momentum":
            return heavy_ball_(S["momentum_buffer"], G, group["momentum"], first=S["step"] == 1)
        beta1, beta2 = group["betas"]
        m = ema_(S["exp_avg"], G, beta1)
        v = second_moment_(S["exp_avg_sq"], G, beta2)
        c1, c2 = (
            bias_correction(beta1, S["step"], G.dtype),
            bias_correction(beta2, S["step"], G.dtype),
        )
        return adam_direction(m, v, c1, c2, group["eps"])

    def _orthogonalize(self, X: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        if group["power"] == 0.0:
            return super()._orthogonalize(X, group)
        return spectral_power(
            X,
            group["power"],
            group["spectral_method"],
            group["spectral_iters"],
            group["spectral_eps"],
        )

    def _finalize(
        self,
        O: torch.Tensor,
        S: dict[str, torch.Tensor],
        group: dict[str, Any],
        shape: tuple[int, int],
        matrix_sum: MatrixSum,
    ) -> torch.Tensor:
        rule = group["scale"]
        if rule == "auto":
            rule = "keller" if group["power"] == 0.0 else "none"
        return apply_scale(O, {**group, "scale": rule}, shape, matrix_sum)
