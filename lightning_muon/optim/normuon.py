"""NorMuon: Muon with neuron-wise (per-row) second-moment normalisation (NorMuon paper, Algorithm 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..core.momentum import ema_, nesterov
from ..core.normalize import MatrixSum, frobenius_norm, match_norm, row_mean_square
from ..core.scaling import shape_scale
from .base import MuonFamilyOptimizer, state_zeros
from .muon import apply_scale
from .validation import check_positive, check_range


def normalized_magnitude(
    O_hat: torch.Tensor,
    O: torch.Tensor,
    group: dict[str, Any],
    shape: tuple[int, int],
    matrix_sum: MatrixSum,
) -> torch.Tensor:
    """Magnitude of a normalised direction ``Ô``.

    ``scale="rms"`` (the papers): RMS aligned to ``rms_target``. Any other rule (the official codes):
    ``Ô`` rescaled to ``‖O‖_F`` first, then the static shape factor.
    """
    if group["scale"] == "rms":
        return apply_scale(O_hat, group, shape, matrix_sum)
    m, n = shape
    return match_norm(O_hat, frobenius_norm(O, matrix_sum), matrix_sum) * shape_scale(
        m, n, group["scale"], group["rms_target"]
    )


class NorMuon(MuonFamilyOptimizer):
    r"""NorMuon: orthogonalized momentum with a per-neuron adaptive step.

    Paper Algorithm 1 (the defaults):

    .. math::

        M_t &= β_1 M_{t-1} + (1-β_1) G_t, \qquad O_t = \mathrm{NS}_5(M_t) \\
        v_t &= β_2 v_{t-1} + (1-β_2)\, \mathrm{mean}_{cols}(O_t ⊙ O_t) \in R^m \\
        Ô_t &= O_t ⊘ (\sqrt{v_t} + ε) \;\text{(row-wise)}, \qquad
        η̂ = 0.2\, η \sqrt{mn} / ‖Ô_t‖_F \\
        W &← W - ηλW - η̂\, Ô_t

    State: the momentum (m·n) and one value per row (m), in fp32. The official code differs
    (Nesterov on, ``Ô`` rescaled to ‖O‖_F then ``sqrt(max(1, m/n))``, eps 1e-10): reproduce it with
    ``nesterov=True, scale="keller", eps=1e-10``. Defaults: β1 = β2 = 0.95, λ = 0.1 (paper); lr 1e-3
    (the RMS-aligned update reuses AdamW-like learning rates; the AdamW branch uses the same lr).

    Args:
        params: an ``nn.Module``, ``named_parameters()``, tensors, or param groups with ``branch``.
        lr: learning rate η.
        momentum: β1 of the momentum EMA.
        beta2: β2 of the per-row second moment.
        nesterov: use the Nesterov look-ahead as the orthogonalizer input (off in the paper).
        weight_decay: decoupled weight decay λ of the NorMuon branch.
        eps: ε in ``O/(sqrt(v) + ε)``.
        ns_steps: Newton–Schulz iterations.
        orthogonalizer: ``"jordan"``, ``"you"``, ``"polar_express"``, ``"svd"`` or a list of ``(a, b, c)``.
        scale: ``"rms"`` (paper) or a static rule applied after rescaling Ô to ‖O‖_F (official code).
        rms_target: target update RMS of ``"rms"`` (0.2 in the paper).
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
        >>> opt = NorMuon(model)
        >>> model(torch.randn(5, 8)).sum().backward()
        >>> opt.step()
        >>> opt.state[model[0].weight]["row_second_moment"].shape
        torch.Size([16, 1])
    """

    algorithm = "normuon"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.95,
        beta2: float = 0.95,
        nesterov: bool = False,
        weight_decay: float = 0.1,
        eps: float = 1e-8,
        ns_steps: int = 5,
        orthogonalizer: str | Sequence[tuple[float, float, float]] = "jordan",
        scale: str = "rms",
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
            lr=lr, momentum=momentum, beta2=beta2, nesterov=nesterov, weight_decay=weight_decay, eps=eps,
            ns_steps=ns_steps, orthogonalizer=orthogonalizer, scale=scale, rms_target=rms_target, ns_eps=ns_eps,
            ns_dtype=ns_dtype, adamw_lr_ratio=adamw_lr_ratio, adamw_betas=adamw_betas, adamw_eps=adamw_eps,
            adamw_weight_decay=adamw_weight_decay,
        )  # fmt: skip
        super().__init__(params, defaults, vocab_size=vocab_size, nonfinite=nonfinite)

    def _validate_algorithm(self, group: dict[str, Any]) -> None:
        self._validate_momentum(group)
        self._validate_orthogonalizer(group)
        check_range("beta2", group["beta2"], 0.0, 1.0)
        check_positive("eps", group["eps"])

    def _init_matrix_state(
        self, p: torch.Tensor, shape: tuple[int, int], group: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        rows = state_zeros(p).reshape(p.shape[0], -1)[:, :1]
        return {
            "momentum_buffer": state_zeros(p),
            "row_second_moment": rows.contiguous(),
        }

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
        v = ema_(S["row_second_moment"], row_mean_square(O), group["beta2"])
        O_hat = O / (v.sqrt() + group["eps"])
        return normalized_magnitude(O_hat, O, group, shape, matrix_sum)
