"""AdaMuon: sign-stabilised orthogonal direction with an elementwise second moment (AdaMuon paper, Alg. 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..core.elementwise import second_moment_, sign
from ..core.momentum import ema_, nesterov
from ..core.normalize import MatrixSum
from .base import MuonFamilyOptimizer, state_zeros
from .normuon import normalized_magnitude
from .validation import check_bool, check_positive


class AdaMuon(MuonFamilyOptimizer):
    r"""AdaMuon: ``NS(sign(M))`` normalised by its own elementwise second moment, RMS-aligned to 0.2.

    Paper Algorithm 1 (the defaults):

    .. math::

        M_t &= β M_{t-1} + (1-β) G_t, \qquad O_t = \mathrm{NS}_5(\mathrm{sign}(M_t)) \\
        V_t &= β V_{t-1} + (1-β)\, O_t ⊙ O_t \quad\text{(the same β: no extra hyperparameter)} \\
        Ô_t &= O_t ⊘ (\sqrt{V_t} + ε), \qquad γ_t = 0.2 \sqrt{mn} / ‖Ô_t‖_F \\
        W &← W - η(γ_t Ô_t + λ W)

    The paper's momentum is the sum ``βM + G``; the EMA differs by the constant ``1-β``, which
    ``sign`` removes (and Newton–Schulz too when ``sign_stabilize=False``). ``sign_stabilize=False``
    is the "Muon+Adam" ablation of the NorMuon paper. The official GPT-2 code adds Nesterov
    (``nesterov=True``) and stores V in bf16 (here V is always fp32). Defaults: β = 0.95, λ = 0.1,
    ε = 1e-8, lr 1e-3 shared with the AdamW branch (paper's GPT-2 setting).

    Args:
        params: an ``nn.Module``, ``named_parameters()``, tensors, or param groups with ``branch``.
        lr: learning rate η.
        momentum: β, for both the momentum and the second moment.
        nesterov: use the Nesterov look-ahead before ``sign`` (official code; off in the paper).
        sign_stabilize: orthogonalize ``sign(M)`` (AdaMuon) instead of ``M`` ("Muon+Adam").
        weight_decay: decoupled weight decay λ.
        eps: ε in ``O/(sqrt(V) + ε)``.
        ns_steps: Newton–Schulz iterations.
        orthogonalizer: ``"jordan"``, ``"you"``, ``"polar_express"``, ``"svd"`` or a list of ``(a, b, c)``.
        scale: ``"rms"`` (paper) or a static rule applied after rescaling Ô to ‖O‖_F.
        rms_target: target update RMS of ``"rms"``.
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
        >>> opt = AdaMuon(model, sign_stabilize=False)
        >>> model(torch.randn(5, 8)).sum().backward()
        >>> opt.step()
        >>> sorted(opt.state[model[0].weight])
        ['momentum_buffer', 'second_moment', 'step']
    """

    algorithm = "adamuon"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.95,
        nesterov: bool = False,
        sign_stabilize: bool = True,
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
            lr=lr, momentum=momentum, nesterov=nesterov, sign_stabilize=sign_stabilize, weight_decay=weight_decay,
            eps=eps, ns_steps=ns_steps, orthogonalizer=orthogonalizer, scale=scale, rms_target=rms_target,
            ns_eps=ns_eps, ns_dtype=ns_dtype, adamw_lr_ratio=adamw_lr_ratio, adamw_betas=adamw_betas,
            adamw_eps=adamw_eps, adamw_weight_decay=adamw_weight_decay,
        )  # fmt: skip
        super().__init__(params, defaults, vocab_size=vocab_size, nonfinite=nonfinite)

    def _validate_algorithm(self, group: dict[str, Any]) -> None:
        self._validate_momentum(group)
        self._validate_orthogonalizer(group)
        check_bool("sign_stabilize", group["sign_stabilize"])
        check_positive("eps", group["eps"])

    def _init_matrix_state(
        self, p: torch.Tensor, shape: tuple[int, int], group: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        return {
            "momentum_buffer": state_zeros(p),
            "second_moment": state_zeros(p),
        }

    def _direction(
        self, G: torch.Tensor, S: dict[str, torch.Tensor], group: dict[str, Any]
    ) -> torch.Tensor:
        M = ema_(S["momentum_buffer"], G, group["momentum"])
        X = nesterov(G, M, group["momentum"]) if group["nesterov"] else M
        return sign(X) if group["sign_stabilize"] else X

    def _finalize(
        self,
        O: torch.Tensor,
        S: dict[str, torch.Tensor],
        group: dict[str, Any],
        shape: tuple[int, int],
        matrix_sum: MatrixSum,
    ) -> torch.Tensor:
        V = second_moment_(S["second_moment"], O, group["momentum"])
        O_hat = O / (V.sqrt() + group["eps"])
        return normalized_magnitude(O_hat, O, group, shape, matrix_sum)
