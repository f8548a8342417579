"""Muon-NSR and Muon-VS: variance-adaptive inputs to Newton–Schulz (arXiv 2601.14603, official code)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..core.elementwise import bias_correction, nsr_direction, variance_, vs_direction
from ..core.momentum import ema_
from ..core.normalize import MatrixSum
from .base import MuonFamilyOptimizer, state_zeros
from .muon import apply_scale
from .validation import check_positive, check_range


class _VarianceAdaptiveMuon(MuonFamilyOptimizer):
    """Shared shell of Muon-NSR and Muon-VS: momentum, variance Γ and the bias-corrected look-ahead.

    .. math::

        Γ_t &= β Γ_{t-1} + β(1-β)(M_{t-1} - G_t)^2, \\qquad M_t = β M_{t-1} + (1-β) G_t \\\\
        M̂ &= M_t/(1-β^t), \\quad Γ̂ = Γ_t/(1-β^t), \\quad M̃ = G_t + \\tfrac{β}{1-β} M̂

    (``nesterov=False`` uses ``M̃ = M̂``). Subclasses turn ``(M̃, Γ̂)`` into the Newton–Schulz input.
    """

    def _validate_algorithm(self, group: dict[str, Any]) -> None:
        self._validate_momentum(group)
        self._validate_orthogonalizer(group)
        check_positive("eps", group["eps"])

    def _init_matrix_state(
        self, p: torch.Tensor, shape: tuple[int, int], group: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        return {
            "momentum_buffer": state_zeros(p),
            "variance": state_zeros(p),
        }

    def _lookahead(
        self, G: torch.Tensor, S: dict[str, torch.Tensor], group: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        beta = group["momentum"]
        M, gamma = S["momentum_buffer"], S["variance"]
        variance_(gamma, M, G, beta)
        ema_(M, G, beta)
        correction = bias_correction(beta, S["step"], G.dtype)
        M_hat = M / correction
        gamma_hat = gamma / correction
        M_tilde = G + (beta / (1.0 - beta)) * M_hat if group["nesterov"] else M_hat
        return M_tilde, gamma_hat

    def _finalize(
        self,
        O: torch.Tensor,
        S: dict[str, torch.Tensor],
        group: dict[str, Any],
        shape: tuple[int, int],
        matrix_sum: MatrixSum,
    ) -> torch.Tensor:
        return apply_scale(O, group, shape, matrix_sum)


class MuonNSR(_VarianceAdaptiveMuon):
    r"""Muon-NSR: noise-to-signal rescaled input ``X = M̃ / (sqrt(M̃² + αΓ̂) + ε)``, then ``NS_5`` and Moonlight scaling.

    With ``α = 1`` and no look-ahead this is Newton–Schulz of the Adam(β1 = β2 = β) direction
    ``m/sqrt(v)`` (since ``v - m² = Γ``); larger ``α`` suppresses noisy coordinates more. Defaults follow
    the official code's LLaMA suites (α = 1000, β = 0.95, ε = 1e-8, lr 1e-3, wd 0.1, Moonlight scaling).

    Args:
        alpha: weight α of the variance against the squared signal.
        params: an ``nn.Module``, ``named_parameters()``, tensors, or param groups with ``branch``.
        lr: learning rate η.
        momentum: β of the momentum and the variance.
        nesterov: use the look-ahead ``G + β/(1-β)·M̂`` (always on in the official code).
        weight_decay: decoupled weight decay λ.
        eps: ε outside the square root of the denominator.
        ns_steps: Newton–Schulz iterations.
        orthogonalizer: ``"jordan"``, ``"you"``, ``"polar_express"``, ``"svd"`` or a list of ``(a, b, c)``.
        scale: lr scale rule (``"moonlight"``: NanoGPT/Suite A code; ``"keller"``: Suite B code).
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
        >>> opt = MuonNSR(model, alpha=10.0)
        >>> model(torch.randn(5, 8)).sum().backward()
        >>> opt.step()
        >>> sorted(opt.state[model[0].weight])
        ['momentum_buffer', 'step', 'variance']
    """

    algorithm = "muon_nsr"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.95,
        alpha: float = 1000.0,
        nesterov: bool = True,
        weight_decay: float = 0.1,
        eps: float = 1e-8,
        ns_steps: int = 5,
        orthogonalizer: str | Sequence[tuple[float, float, float]] = "jordan",
        scale: str = "moonlight",
        rms_target: float = 0.2,
        ns_eps: float = 1e-7,
        ns_dtype: str | None = None,
        adamw_lr_ratio: float = 1.0,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
        nonfinite: str = "raise",
        vocab_size: int | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, alpha=alpha, nesterov=nesterov, weight_decay=weight_decay, eps=eps,
            ns_steps=ns_steps, orthogonalizer=orthogonalizer, scale=scale, rms_target=rms_target, ns_eps=ns_eps,
            ns_dtype=ns_dtype, adamw_lr_ratio=adamw_lr_ratio, adamw_betas=adamw_betas, adamw_eps=adamw_eps,
            adamw_weight_decay=adamw_weight_decay,
        )  # fmt: skip
        super().__init__(params, defaults, vocab_size=vocab_size, nonfinite=nonfinite)

    def _validate_algorithm(self, group: dict[str, Any]) -> None:
        super()._validate_algorithm(group)
        check_range("alpha", group["alpha"], 0.0)

    def _direction(
        self, G: torch.Tensor, S: dict[str, torch.Tensor], group: dict[str, Any]
    ) -> torch.Tensor:
        M_tilde, gamma_hat = self._lookahead(G, S, group)
        return nsr_direction(M_tilde, gamma_hat, group["alpha"], group["eps"])


class MuonVS(_VarianceAdaptiveMuon):
    r"""Muon-VS: variance-scaled input ``X = M̃ / (sqrt(Γ̂) + ε)`` ("sign × SNR"), then ``NS_5``.

    The large-``α`` limit of Muon-NSR up to a global factor that Newton–Schulz removes. Defaults as
    :class:`MuonNSR` (official code; it has no α).

    Args:
        params: an ``nn.Module``, ``named_parameters()``, tensors, or param groups with ``branch``.
        lr: learning rate η.
        momentum: β of the momentum and the variance.
        nesterov: use the look-ahead ``G + β/(1-β)·M̂`` (always on in the official code).
        weight_decay: decoupled weight decay λ.
        eps: ε outside the square root of the denominator.
        ns_steps: Newton–Schulz iterations.
        orthogonalizer: ``"jordan"``, ``"you"``, ``"polar_express"``, ``"svd"`` or a list of ``(a, b, c)``.
        scale: lr scale rule (``"moonlight"``: NanoGPT/Suite A code; ``"keller"``: Suite B code).
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
        >>> opt = MuonVS(model)
        >>> model(torch.randn(5, 8)).sum().backward()
        >>> opt.step()
        >>> int(opt.state[model[0].weight]["step"])
        1
    """

    algorithm = "muon_vs"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.1,
        eps: float = 1e-8,
        ns_steps: int = 5,
        orthogonalizer: str | Sequence[tuple[float, float, float]] = "jordan",
        scale: str = "moonlight",
        rms_target: float = 0.2,
        ns_eps: float = 1e-7,
        ns_dtype: str | None = None,
        adamw_lr_ratio: float = 1.0,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
        nonfinite: str = "raise",
        vocab_size: int | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, eps=eps, ns_steps=ns_steps,
            orthogonalizer=orthogonalizer, scale=scale, rms_target=rms_target, ns_eps=ns_eps, ns_dtype=ns_dtype,
            adamw_lr_ratio=adamw_lr_ratio, adamw_betas=adamw_betas, adamw_eps=adamw_eps,
            adamw_weight_decay=adamw_weight_decay,
        )  # fmt: skip
        super().__init__(params, defaults, vocab_size=vocab_size, nonfinite=nonfinite)

    def _direction(
        self, G: torch.Tensor, S: dict[str, torch.Tensor], group: dict[str, Any]
    ) -> torch.Tensor:
        M_tilde, gamma_hat = self._lookahead(G, S, group)
        return vs_direction(M_tilde, gamma_hat, group["eps"])
