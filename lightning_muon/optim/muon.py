"""Muon: momentum orthogonalized by Newton–Schulz (Keller Jordan; ``torch.optim.Muon`` semantics)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..core.momentum import ema_, nesterov_
from ..core.normalize import rms_align
from ..core.scaling import shape_scale
from ..engine.step import MatrixContext, MatrixStep
from ..engine.tensors import state_zeros
from .base import MuonFamilyOptimizer
from .hyperparameters import OrthogonalizerSpec, own_arguments


def apply_scale(U: torch.Tensor, h: Mapping[str, Any], ctx: MatrixContext) -> torch.Tensor:
    """Multiply ``U`` by the group's scale rule (``"rms"``: align each matrix's RMS to ``rms_target``)."""
    m, n = ctx.shape
    if h["scale"] == "rms":
        return rms_align(U, h["rms_target"], ctx.matrix_sum, m * n)
    return U * shape_scale(m, n, h["scale"], h["rms_target"])


def momentum_direction(G: torch.Tensor, S: dict[str, torch.Tensor], h: Mapping[str, Any]) -> torch.Tensor:
    """``M ← βM + (1-β)G``; the Nesterov look-ahead ``(1-β)G + βM`` (written into the scratch ``G``) or ``M``."""
    M = ema_(S["momentum_buffer"], G, h["momentum"])
    return nesterov_(G, M, h["momentum"]) if h["nesterov"] else M


class MuonStep(MatrixStep):
    """Muon's matrix step: momentum, orthogonalize, scale."""

    def init_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"momentum_buffer": state_zeros(p)}

    def begin(self, G: torch.Tensor, S: dict[str, torch.Tensor]) -> torch.Tensor:
        return momentum_direction(G, S, self.h)

    def finish(self, O: torch.Tensor, S: dict[str, torch.Tensor], ctx: MatrixContext) -> torch.Tensor:
        return apply_scale(O, self.h, ctx)

    def static_scale(self, ctx: MatrixContext) -> float | None:
        if type(self).finish is not MuonStep.finish or self.h["scale"] == "rms":
            return None  # a subclass's own finish, or a per-step statistic
        return shape_scale(*ctx.shape, self.h["scale"], self.h["rms_target"])


class Muon(MuonFamilyOptimizer):
    r"""Muon with an AdamW branch, closure-safe, batched and routed.

    For each hidden matrix ``W ∈ R^{m×n}`` with gradient ``G``:

    .. math::

        M_t &= β M_{t-1} + (1-β) G_t \\
        X_t &= (1-β) G_t + β M_t \;\text{(Nesterov)} \quad\text{or}\quad M_t \\
        O_t &= \mathrm{NS}_K(X_t) ≈ \mathrm{polar}(X_t) \\
        W &← W(1 - ηλ) - η\, s(m, n)\, O_t, \qquad s = \sqrt{\max(1, m/n)} \;\text{("keller")}

    Everything else (embeddings, heads, norms, biases) takes AdamW with lr ``η·adamw_lr_ratio``.
    Defaults follow Keller Jordan's reference (lr 0.02 "in units of spectral norm per update",
    momentum 0.95, Nesterov, 5 Jordan steps, aux Adam lr 3e-4 = 0.015·0.02, betas (0.9, 0.95),
    eps 1e-10) with ``torch.optim.Muon``'s update semantics. Newton–Schulz runs in bf16 where the hardware
    multiplies bf16 fast (CUDA, CPUs with bf16 matrix units), else fp32, unless ``ns_dtype`` says otherwise. Do not use Muon for embeddings or output heads:
    routing keeps them on AdamW.

    Args:
        lr: learning rate η of the Muon branch (units of spectral norm per step with ``scale="keller"``).
        weight_decay: decoupled weight decay λ of the Muon branch (``W ← W(1-ηλ)``).

    Example:
        >>> import torch, torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> opt = Muon(model, lr=0.02)
        >>> model(torch.randn(5, 8)).sum().backward()
        >>> opt.step()
        >>> [g["name"] for g in opt.param_groups]
        ['muon', 'adamw']
    """

    algorithm = "muon"
    step_class = MuonStep

    def __init__(
        self, params: Any, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
        weight_decay: float = 0.0, ns_steps: int = 5, orthogonalizer: OrthogonalizerSpec = "jordan",
        scale: str = "keller", rms_target: float = 0.2,
        adamw_lr_ratio: float = 0.015, adamw_eps: float = 1e-10, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(params, own_arguments(locals()), **kwargs)
