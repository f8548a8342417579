"""NorMuon: Muon with neuron-wise (per-row) second-moment normalisation (NorMuon paper, Algorithm 1)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..core.momentum import ema_
from ..core.normalize import row_square_sum, safe_ratio
from ..core.scaling import shape_scale
from ..engine.step import MatrixContext
from ..engine.tensors import state_zeros
from .base import MuonFamilyOptimizer
from .hyperparameters import OrthogonalizerSpec, own_arguments
from .muon import MuonStep


def magnitude_factor(
    norm_hat: torch.Tensor, norm_O: Callable[[], torch.Tensor], h: Mapping[str, Any], ctx: MatrixContext
) -> torch.Tensor:
    """The factor ``(N, 1, 1)`` that turns a normalised direction ``Ô`` (of norm ``norm_hat``) into ``U``.

    ``scale="rms"`` (the papers): ``rms_target·sqrt(mn)/‖Ô‖_F`` (RMS aligned). Any other rule (the
    official codes): ``‖O‖_F/‖Ô‖_F`` (``Ô`` rescaled to ``O``'s norm, ``norm_O()``) times the static
    shape factor. A zero ``Ô`` gives 0.
    """
    m, n = ctx.shape
    if h["scale"] == "rms":
        return safe_ratio(h["rms_target"] * (m * n) ** 0.5, norm_hat)
    return safe_ratio(norm_O(), norm_hat) * shape_scale(m, n, h["scale"], h["rms_target"])


class NorMuonStep(MuonStep):
    """NorMuon's matrix step: Muon's momentum, then the per-row second moment of ``O``."""

    def init_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = state_zeros(p).reshape(p.shape[0], -1)[:, :1]
        return {"momentum_buffer": state_zeros(p), "row_second_moment": rows.contiguous()}

    def finish(self, O: torch.Tensor, S: dict[str, torch.Tensor], ctx: MatrixContext) -> torch.Tensor:
        """One pass over ``O``: ``U = O ⊙ (γ/(sqrt(v) + ε))`` row-wise, with ``‖Ô‖_F² = Σ_r s_r/(sqrt(v_r) + ε)²``
        from the row sums ``s_r = Σ_cols O²`` that also feed ``v``, written over ``O`` (no temporary of its size)."""
        squares = row_square_sum(O)  # (N, m, 1)
        v = ema_(S["row_second_moment"], squares / max(1, O.size(-1)), self.h["beta2"])
        inverse = (v.sqrt() + self.h["eps"]).reciprocal_()
        norm_hat = ctx.matrix_sum(squares * inverse.square()).sqrt()
        factor = magnitude_factor(norm_hat, lambda: ctx.matrix_sum(squares).sqrt(), self.h, ctx)
        return O.mul_(inverse.mul_(factor))


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
    ``nesterov=True, scale="keller", eps=1e-10``. Defaults: β1 = β2 = 0.95, λ = 0.1 (paper); lr 8e-3
    shared with the AdamW branch, chosen on the efficiency benchmark's grids (``docs/benchmarks/efficiency.md``: litgpt GPT 4×128 on byte-level standard-library source, 400 steps, 3 seeds): 71% [68–74] of AdamW's steps to
    AdamW's final loss (best cell of the 2-D grid 69%, the paper's lr 1e-3 never reaches it: final
    loss 1.915 vs 1.845). The paper's GPT-2 setting: ``NorMuon(params, **NorMuon.paper_settings)``.

    Args:
        momentum: β1 of the momentum EMA.
        nesterov: use the Nesterov look-ahead as the orthogonalizer input (off in the paper).
        eps: ε in ``O/(sqrt(v) + ε)``.
        scale: ``"rms"`` (paper) or a static rule applied after rescaling Ô to ‖O‖_F (official code).
        rms_target: target update RMS of ``"rms"`` (0.2 in the paper).

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
    step_class = NorMuonStep
    paper_settings = {"lr": 1e-3}
    paper_source = "NorMuon paper, Algorithm 1 (GPT-2 setting)"

    def __init__(
        self, params: Any, lr: float = 8e-3, momentum: float = 0.95, beta2: float = 0.95, nesterov: bool = False,
        weight_decay: float = 0.1, eps: float = 1e-8, ns_steps: int = 5, orthogonalizer: OrthogonalizerSpec = "jordan",
        scale: str = "rms", rms_target: float = 0.2, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(params, own_arguments(locals()), **kwargs)
