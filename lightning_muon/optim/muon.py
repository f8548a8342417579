"""Muon: momentum orthogonalized by Newton–Schulz (Keller Jordan; ``torch.optim.Muon`` semantics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..core.momentum import ema_, nesterov
from ..core.normalize import MatrixSum, rms_align
from ..core.scaling import shape_scale
from .base import MuonFamilyOptimizer, state_zeros


def apply_scale(
    U: torch.Tensor, group: dict[str, Any], shape: tuple[int, int], matrix_sum: MatrixSum
) -> torch.Tensor:
    """Multiply ``U`` by the group's scale rule (``"rms"``: align each matrix's RMS to ``rms_target``)."""
    m, n = shape
    if group["scale"] == "rms":
        return rms_align(U, group["rms_target"], matrix_sum, m * n)
    return U * shape_scale(m, n, group["scale"], group["rms_target"])


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
    eps 1e-10) with ``torch.optim.Muon``'s update semantics. Newton–Schulz runs in fp32 on CPUs and
    bf16 on CUDA unless ``ns_dtype`` says otherwise. Do not use Muon for embeddings or output heads:
    routing keeps them on AdamW.

    Args:
        params: an ``nn.Module``, ``named_parameters()``, tensors, or param groups with ``branch``.
        lr: learning rate η of the Muon branch (units of spectral norm per step with ``scale="keller"``).
        momentum: EMA coefficient β of the momentum.
        nesterov: use the Nesterov look-ahead ``(1-β)G + βM`` as the orthogonalizer input.
        weight_decay: decoupled weight decay λ of the Muon branch (``W ← W(1-ηλ)``).
        ns_steps: Newton–Schulz iterations.
        orthogonalizer: ``"jordan"``, ``"you"``, ``"polar_express"``, ``"svd"`` (exact polar factor) or a
            list of ``(a, b, c)`` coefficient triples.
        scale: lr scale rule: ``"keller"`` sqrt(max(1, m/n)), ``"moonlight"`` rms_target·sqrt(max(m, n)),
            ``"spectral"`` sqrt(m/n), ``"rms"`` (RMS aligned to rms_target each step) or ``"none"``.
        rms_target: the update RMS of the ``"moonlight"`` and ``"rms"`` rules.
        ns_eps: epsilon of the Newton–Schulz input normalisation ``X/(‖X‖_F + eps)``.
        ns_dtype: Newton–Schulz compute dtype (``"float32"``, ``"bfloat16"``, …); ``None`` picks by device.
        adamw_lr_ratio: AdamW branch lr as a multiple of the group lr.
        adamw_betas: AdamW (β1, β2).
        adamw_eps: AdamW epsilon.
        adamw_weight_decay: AdamW branch decoupled weight decay.
        nonfinite: ``"raise"`` on a non-finite gradient (nothing is changed) or ``"skip"`` the step.
        vocab_size: routing hint for plain tensors: matrices with a leading dim equal to it go to AdamW.

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

    def __init__(
        self,
        params: Any,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        orthogonalizer: str | Sequence[tuple[float, float, float]] = "jordan",
        scale: str = "keller",
        rms_target: float = 0.2,
        ns_eps: float = 1e-7,
        ns_dtype: str | None = None,
        adamw_lr_ratio: float = 0.015,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
        nonfinite: str = "raise",
        vocab_size: int | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, ns_steps=ns_steps,
            orthogonalizer=orthogonalizer, scale=scale, rms_target=rms_target, ns_eps=ns_eps, ns_dtype=ns_dtype,
            adamw_lr_ratio=adamw_lr_ratio, adamw_betas=adamw_betas, adamw_eps=adamw_eps,
            adamw_weight_decay=adamw_weight_decay,
        )  # fmt: skip
        super().__init__(params, defaults, vocab_size=vocab_size, nonfinite=nonfinite)

    def _validate_algorithm(self, group: dict[str, Any]) -> None:
        self._validate_momentum(group)
        self._validate_orthogonalizer(group)

    def _init_matrix_state(
        self, p: torch.Tensor, shape: tuple[int, int], group: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        return {"momentum_buffer": state_zeros(p)}

    def _direction(
        self, G: torch.Tensor, S: dict[str, torch.Tensor], group: dict[str, Any]
    ) -> torch.Tensor:
        M = ema_(S["momentum_buffer"], G, group["momentum"])
        return nesterov(G, M, group["momentum"]) if group["nesterov"] else M

    def _finalize(
        self,
        O: torch.Tensor,
        S: dict[str, torch.Tensor],
        group: dict[str, Any],
        shape: tuple[int, int],
        matrix_sum: MatrixSum,
    ) -> torch.Tensor:
        return apply_scale(O, group, shape, matrix_sum)
