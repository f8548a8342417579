"""AdaMuon: sign-stabilised orthogonal direction with an elementwise second moment (AdaMuon paper, Alg. 1)."""

from __future__ import annotations

from typing import Any

import torch

from ..core.elementwise import second_moment_
from ..core.normalize import frobenius_norm
from ..engine.step import MatrixContext
from ..engine.tensors import state_zeros
from .base import MuonFamilyOptimizer
from .hyperparameters import OrthogonalizerSpec, own_arguments
from .muon import MuonStep, momentum_direction
from .normuon import magnitude_factor


class AdaMuonStep(MuonStep):
    """AdaMuon's matrix step: ``sign`` of the momentum, then the elementwise second moment of ``O``."""

    def init_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"momentum_buffer": state_zeros(p), "second_moment": state_zeros(p)}

    def begin(self, G: torch.Tensor, S: dict[str, torch.Tensor]) -> torch.Tensor:
        X = momentum_direction(G, S, self.h)
        return torch.sign(X, out=G) if self.h["sign_stabilize"] else X  # into the scratch G

    def finish(self, O: torch.Tensor, S: dict[str, torch.Tensor], ctx: MatrixContext) -> torch.Tensor:
        """``Ô = O/(sqrt(V) + ε)`` and then ``U`` written over ``O`` (the caller's fresh result).

        ``‖Ô‖_F`` is summed element by element (a temporary of ``O``'s size): ``V`` is elementwise
        state, and an executor may hold elements of a row whose state lives elsewhere (FSDP1 slices),
        which only an elementwise sum can leave out; ``‖O‖_F`` comes from row norms."""
        V = second_moment_(S["second_moment"], O, self.h["momentum"])
        norm_O = frobenius_norm(O, ctx.matrix_sum) if self.h["scale"] != "rms" else None
        O_hat = O.div_(V.sqrt().add_(self.h["eps"]))
        norm_hat = ctx.matrix_sum(O_hat.square()).sqrt()
        factor = magnitude_factor(norm_hat, lambda: norm_O, self.h, ctx)
        return O_hat.mul_(factor)


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
    ε = 1e-8 (paper); lr 1.6e-2 shared with the AdamW branch, chosen on the efficiency benchmark's grids (``docs/benchmarks/efficiency.md``: litgpt GPT 4×128 on byte-level standard-library source, 400 steps, 3 seeds): 86% [84–89] of
    AdamW's steps (best cell 82%; the paper's lr 1e-3 never reaches AdamW's final loss: 2.084 vs
    1.845). The paper's GPT-2 setting: ``AdaMuon(params, **AdaMuon.paper_settings)``.

    Args:
        momentum: β, for both the momentum and the second moment.
        nesterov: use the Nesterov look-ahead before ``sign`` (official code; off in the paper).
        sign_stabilize: orthogonalize ``sign(M)`` (AdaMuon) instead of ``M`` ("Muon+Adam").
        eps: ε in ``O/(sqrt(V) + ε)``.
        scale: ``"rms"`` (paper) or a static rule applied after rescaling Ô to ‖O‖_F.

    Example:
        >>> import torch
        >>> W = torch.nn.Parameter(torch.randn(16, 8))
        >>> opt = AdaMuon([{"params": [W], "branch": "muon"}], sign_stabilize=False)
        >>> W.grad = torch.randn(16, 8)
        >>> opt.step()
        >>> sorted(opt.state[W])
        ['momentum_buffer', 'second_moment', 'step']
    """

    algorithm = "adamuon"
    step_class = AdaMuonStep
    paper_settings = {"lr": 1e-3}
    paper_source = "AdaMuon paper, Algorithm 1 (GPT-2 setting)"

    def __init__(
        self, params: Any, lr: float = 1.6e-2, momentum: float = 0.95, nesterov: bool = False,
        sign_stabilize: bool = True, weight_decay: float = 0.1, eps: float = 1e-8, ns_steps: int = 5,
        orthogonalizer: OrthogonalizerSpec = "jordan", scale: str = "rms", rms_target: float = 0.2, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(params, own_arguments(locals()), **kwargs)
