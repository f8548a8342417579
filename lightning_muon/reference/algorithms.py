r"""Every algorithm as one function of a single matrix: ``update(G, state, hp) -> U``.

``G`` is the gradient of one ``m × n`` weight ``W``, ``state`` a dict this function fills on the
first call and updates in place, ``hp`` the optimizer's constructor arguments (all of them: the
registry fills in the defaults, :meth:`lightning_muon.optim.spec.OptimizerSpec.hyperparameters`).
The returned ``U`` is applied as

.. math::

    W ← W(1 - ηλ) - η U

(:func:`lightning_muon.reference.optimizer.decoupled_step`). Each function reads top to bottom as
its paper's pseudo-code; the symbols are the papers' (see ``docs/optimizers/``).

Example:
    >>> import torch
    >>> hp = dict(momentum=0.95, nesterov=True, orthogonalizer="svd", ns_steps=5, ns_eps=1e-7,
    ...           scale="keller", rms_target=0.2)
    >>> state = {}
    >>> U = muon(torch.randn(8, 4, dtype=torch.float64), state, hp)
    >>> torch.linalg.svdvals(U).round(decimals=6).tolist()  # polar factor times sqrt(8/4)
    [1.414214, 1.414214, 1.414214, 1.414214]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .linalg import newton_schulz, polar, scale_rule, spectral_power, spectral_power_newton

State = dict[str, Any]
Hyperparameters = Mapping[str, Any]


# ---------------------------------------------------------------- shared steps
def ema(M: torch.Tensor, G: torch.Tensor, beta: float) -> torch.Tensor:
    """``M ← β M + (1-β) G``."""
    return beta * M + (1 - beta) * G


def nesterov_lookahead(G: torch.Tensor, M: torch.Tensor, beta: float) -> torch.Tensor:
    """The EMA Nesterov look-ahead ``(1-β) G + β M``."""
    return (1 - beta) * G + beta * M


def orthogonalize(X: torch.Tensor, hp: Hyperparameters) -> torch.Tensor:
    """``O = polar(X)`` exactly (``orthogonalizer="svd"``) or by Newton–Schulz."""
    if hp["orthogonalizer"] == "svd":
        return polar(X)
    return newton_schulz(X, hp["orthogonalizer"], hp["ns_steps"], hp["ns_eps"])


def normalized_magnitude(O_hat: torch.Tensor, O: torch.Tensor, hp: Hyperparameters) -> torch.Tensor:
    """The step of a normalised direction ``Ô`` (NorMuon, AdaMuon).

    ``scale="rms"`` (the papers): ``0.2·sqrt(mn)·Ô/‖Ô‖_F``. Any other rule (the official codes):
    ``Ô`` rescaled to ``‖O‖_F``, then the rule's static factor.
    """
    if hp["scale"] == "rms":
        return scale_rule(O_hat, "rms", hp["rms_target"])
    norm = torch.linalg.matrix_norm(O_hat)
    matched = O_hat * (torch.linalg.matrix_norm(O) / norm) if norm > 0 else O_hat
    return scale_rule(matched, hp["scale"], hp["rms_target"])


def bias_correction(beta: float, t: int) -> float:
    """``1 - β^t``."""
    return 1 - beta**t


# ---------------------------------------------------------------- the algorithms
def muon(G: torch.Tensor, state: State, hp: Hyperparameters) -> torch.Tensor:
    r"""Muon (Keller Jordan; ``torch.optim.Muon``).

    .. math::

        M ← β M + (1-β) G, \quad X = (1-β) G + β M \;\text{(Nesterov) or } M, \quad
        U = s(m, n)·\mathrm{NS}(X)
    """
    if not state:
        state["M"] = torch.zeros_like(G)
    beta = hp["momentum"]
    state["M"] = ema(state["M"], G, beta)
    X = nesterov_lookahead(G, state["M"], beta) if hp["nesterov"] else state["M"]
    return scale_rule(orthogonalize(X, hp), hp["scale"], hp["rms_target"])


def normuon(G: torch.Tensor, state: State, hp: Hyperparameters) -> torch.Tensor:
    r"""NorMuon, Algorithm 1: a second moment per output row (neuron) of the orthogonalized momentum.

    .. math::

        M ← β_1 M + (1-β_1) G, \quad O = \mathrm{NS}(M), \quad
        v ← β_2 v + (1-β_2)\,\mathrm{mean}_{cols}(O ⊙ O), \quad Ô = O ⊘ (\sqrt{v} + ε)
    """
    if not state:
        state["M"] = torch.zeros_like(G)
        state["v"] = torch.zeros(G.shape[0], 1, dtype=G.dtype)
    beta = hp["momentum"]
    state["M"] = ema(state["M"], G, beta)
    X = nesterov_lookahead(G, state["M"], beta) if hp["nesterov"] else state["M"]
    O = orthogonalize(X, hp)
    state["v"] = ema(state["v"], (O * O).mean(dim=1, keepdim=True), hp["beta2"])
    O_hat = O / (state["v"].sqrt() + hp["eps"])
    return normalized_magnitude(O_hat, O, hp)


def adamuon(G: torch.Tensor, state: State, hp: Hyperparameters) -> torch.Tensor:
    r"""AdaMuon, Algorithm 1: an elementwise second moment of ``NS(sign(M))``, with the same β.

    .. math::

        M ← β M + (1-β) G, \quad O = \mathrm{NS}(\mathrm{sign}(M)), \quad
        V ← β V + (1-β) O ⊙ O, \quad Ô = O ⊘ (\sqrt{V} + ε)

    ``sign_stabilize=False`` orthogonalizes ``M`` itself ("Muon+Adam").
    """
    if not state:
        state["M"] = torch.zeros_like(G)
        state["V"] = torch.zeros_like(G)
    beta = hp["momentum"]
    state["M"] = ema(state["M"], G, beta)
    X = nesterov_lookahead(G, state["M"], beta) if hp["nesterov"] else state["M"]
    if hp["sign_stabilize"]:
        X = torch.sign(X)
    O = orthogonalize(X, hp)
    state["V"] = ema(state["V"], O * O, beta)
    O_hat = O / (state["V"].sqrt() + hp["eps"])
    return normalized_magnitude(O_hat, O, hp)


def variance_adaptive_lookahead(
    G: torch.Tensor, state: State, hp: Hyperparameters
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The shared first half of Muon-NSR and Muon-VS (official code).

    .. math::

        Γ ← β Γ + β(1-β)(M - G)^2, \quad M ← β M + (1-β) G, \quad
        M̂ = M/(1-β^t), \quad Γ̂ = Γ/(1-β^t), \quad M̃ = G + \tfrac{β}{1-β} M̂ \;\text{(or } M̂)
    """
    if not state:
        state.update(M=torch.zeros_like(G), Gamma=torch.zeros_like(G), t=0)
    beta = hp["momentum"]
    state["t"] += 1
    state["Gamma"] = beta * state["Gamma"] + beta * (1 - beta) * (state["M"] - G) ** 2
    state["M"] = ema(state["M"], G, beta)
    correction = bias_correction(beta, state["t"])
    M_hat, Gamma_hat = state["M"] / correction, state["Gamma"] / correction
    M_tilde = G + beta / (1 - beta) * M_hat if hp["nesterov"] else M_hat
    return M_tilde, Gamma_hat


def muon_nsr(G: torch.Tensor, state: State, hp: Hyperparameters) -> torch.Tensor:
    r"""Muon-NSR: ``U = s·NS(M̃ / (\sqrt{M̃² + αΓ̂} + ε))``, noise-to-signal rescaling."""
    M_tilde, Gamma_hat = variance_adaptive_lookahead(G, state, hp)
    X = M_tilde / (torch.sqrt(M_tilde**2 + hp["alpha"] * Gamma_hat) + hp["eps"])
    return scale_rule(orthogonalize(X, hp), hp["scale"], hp["rms_target"])


def muon_vs(G: torch.Tensor, state: State, hp: Hyperparameters) -> torch.Tensor:
    r"""Muon-VS: ``U = s·NS(M̃ / (\sqrt{Γ̂} + ε))``, variance scaling."""
    M_tilde, Gamma_hat = variance_adaptive_lookahead(G, state, hp)
    X = M_tilde / (torch.sqrt(Gamma_hat) + hp["eps"])
    return scale_rule(orthogonalize(X, hp), hp["scale"], hp["rms_target"])


def adam_direction(G: torch.Tensor, state: State, betas: tuple, eps: float) -> torch.Tensor:
    r"""The bias-corrected Adam ratio ``(m/(1-β_1^t)) / (\sqrt{v/(1-β_2^t)} + ε)``."""
    if not state:
        state.update(m=torch.zeros_like(G), v=torch.zeros_like(G), t=0)
    beta1, beta2 = betas
    state["t"] += 1
    state["m"] = ema(state["m"], G, beta1)
    state["v"] = ema(state["v"], G * G, beta2)
    m_hat = state["m"] / bias_correction(beta1, state["t"])
    v_hat = state["v"] / bias_correction(beta2, state["t"])
    return m_hat / (v_hat.sqrt() + eps)


def heavy_ball(G: torch.Tensor, state: State, mu: float) -> torch.Tensor:
    """``B ← G`` on the first step (``torch.optim.SGD``), then ``B ← μ B + G``."""
    state["B"] = G.clone() if "B" not in state else mu * state["B"] + G
    return state["B"]


def psi(D: torch.Tensor, hp: Hyperparameters) -> torch.Tensor:
    """``Ψ_p(D)``: p = 0 the orthogonalizer, p = 1 the identity, p ∈ {¼, ½} exact (SVD) when
    ``orthogonalizer="svd"`` or ``spectral_method="svd"``, else the coupled Newton iteration."""
    p = hp["power"]
    if p == 0:
        return orthogonalize(D, hp)
    if p == 1:
        return D
    if hp["orthogonalizer"] == "svd" or hp["spectral_method"] == "svd":
        return spectral_power(D, p)
    return spectral_power_newton(D, p, hp["spectral_iters"], hp["spectral_eps"])


def spectral_muon(G: torch.Tensor, state: State, hp: Hyperparameters) -> torch.Tensor:
    r"""SpectralMuon ("Delving into Muon and Beyond"): ``U = s·Ψ_p(D)``, ``Ψ_p(UΣVᵀ) = UΣ^pVᵀ``.

    ``D`` is the Adam ratio (``direction="adam"``) or heavy-ball momentum (``"momentum"``);
    ``scale="auto"`` is ``"keller"`` for ``p = 0`` and ``"none"`` otherwise (official code).
    """
    if hp["direction"] == "adam":
        D = adam_direction(G, state, hp["betas"], hp["eps"])
    else:
        D = heavy_ball(G, state, hp["momentum"])
    rule = hp["scale"]
    if rule == "auto":
        rule = "keller" if hp["power"] == 0 else "none"
    return scale_rule(psi(D, hp), rule, hp["rms_target"])


def adamw(G: torch.Tensor, state: State, hp: Hyperparameters) -> torch.Tensor:
    r"""AdamW (Loshchilov & Hutter; ``torch.optim.AdamW``): ``U = m̂/(\sqrt{v̂} + ε)``."""
    return adam_direction(G, state, hp["betas"], hp["eps"])


ALGORITHMS = {
    "muon": muon,
    "normuon": normuon,
    "adamuon": adamuon,
    "muon_nsr": muon_nsr,
    "muon_vs": muon_vs,
    "spectral_muon": spectral_muon,
    "adamw": adamw,
}
"""The reference update of each registry name."""
