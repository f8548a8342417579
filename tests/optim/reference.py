"""Independent float64 oracles, written from the papers' pseudo-code.

Plain numpy/torch loops with the exact SVD polar factor; they share no code with the package (not
even with its reference tier, ``lightning_muon.reference``). Each ``*_step(ref, G)`` takes the
optimizer's full hyperparameters (``ref.hp``, constructor argument names) and returns the new weight.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _svd(X: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """numpy SVD and the mask of singular values above round-off (1e-13·max(m, n)·σ_max)."""
    U, S, Vh = np.linalg.svd(X.numpy(), full_matrices=False)
    keep = S > S.max(initial=0.0) * 1e-13 * max(X.shape)
    return U, S, Vh, keep


def polar(X: torch.Tensor) -> torch.Tensor:
    """Exact polar factor U Vᵀ by numpy SVD (null directions dropped)."""
    U, _, Vh, keep = _svd(X)
    return torch.from_numpy((U * keep) @ Vh)


def spectral(X: torch.Tensor, p: float) -> torch.Tensor:
    """U Σ^p Vᵀ on the numerical rank."""
    U, S, Vh, keep = _svd(X)
    return torch.from_numpy((U * np.where(keep, S, 0.0) ** p) @ Vh)


class Reference:
    """State for one matrix; ``step(G)`` returns the new weight."""

    def __init__(self, W: torch.Tensor, **hp):
        self.W = W.clone().double()
        self.hp = hp
        self.t = 0
        m, n = W.shape
        self.m, self.n = m, n
        self.M = torch.zeros(m, n, dtype=torch.float64)
        self.V = torch.zeros(m, n, dtype=torch.float64)
        self.v = torch.zeros(m, 1, dtype=torch.float64)

    def scale(self, U: torch.Tensor, rule: str) -> torch.Tensor:
        m, n, target = self.m, self.n, self.hp["rms_target"]
        if rule == "keller":
            return U * math.sqrt(max(1.0, m / n))
        if rule == "moonlight":
            return U * target * math.sqrt(max(m, n))
        if rule == "spectral":
            return U * math.sqrt(m / n)
        if rule == "rms":
            norm = float(U.norm())
            return U * target * math.sqrt(m * n) / norm if norm else U
        assert rule == "none", rule
        return U

    def normalized(self, O_hat: torch.Tensor, O: torch.Tensor) -> torch.Tensor:
        """Papers: RMS-aligned Ô. Official codes (any other rule): Ô rescaled to ‖O‖_F, then the rule."""
        if self.hp["scale"] == "rms":
            return self.scale(O_hat, "rms")
        return self.scale(O_hat * O.norm() / O_hat.norm(), self.hp["scale"])

    def apply(self, U: torch.Tensor) -> torch.Tensor:
        lr, wd = self.hp["lr"], self.hp["weight_decay"]
        self.W = self.W - lr * wd * self.W - lr * U
        return self.W


def muon_step(ref: Reference, G: torch.Tensor) -> torch.Tensor:
    """torch.optim.Muon: EMA momentum, Nesterov, polar, a scale rule."""
    b = ref.hp["momentum"]
    ref.M = b * ref.M + (1 - b) * G
    X = (1 - b) * G + b * ref.M if ref.hp["nesterov"] else ref.M
    return ref.apply(ref.scale(polar(X), ref.hp["scale"]))


def normuon_step(ref: Reference, G: torch.Tensor) -> torch.Tensor:
    """NorMuon paper, Algorithm 1 (Nesterov and the Frobenius-matched scale of the official code)."""
    b1, b2, eps = ref.hp["momentum"], ref.hp["beta2"], ref.hp["eps"]
    ref.M = b1 * ref.M + (1 - b1) * G
    X = (1 - b1) * G + b1 * ref.M if ref.hp["nesterov"] else ref.M
    O = polar(X)
    ref.v = b2 * ref.v + (1 - b2) * (O * O).mean(dim=1, keepdim=True)
    return ref.apply(ref.normalized(O / (ref.v.sqrt() + eps), O))


def adamuon_step(ref: Reference, G: torch.Tensor) -> torch.Tensor:
    """AdaMuon paper, Algorithm 1 (SGD-sum momentum, as written in the paper)."""
    b, eps = ref.hp["momentum"], ref.hp["eps"]
    ref.M = b * ref.M + G
    X = G + b * ref.M if ref.hp["nesterov"] else ref.M
    if ref.hp["sign_stabilize"]:
        X = torch.sign(X)
    O = polar(X)
    ref.V = b * ref.V + (1 - b) * O * O
    return ref.apply(ref.normalized(O / (ref.V.sqrt() + eps), O))


def _variance_adaptive(ref: Reference, G: torch.Tensor, nsr: bool) -> torch.Tensor:
    """Muon-NSR / Muon-VS, official code (NanoGPT muon_nsr.py / muon_vs.py)."""
    b, eps = ref.hp["momentum"], ref.hp["eps"]
    ref.t += 1
    ref.V = b * ref.V + b * (1 - b) * (ref.M - G) ** 2
    ref.M = b * ref.M + (1 - b) * G
    M_hat = ref.M / (1 - b**ref.t)
    V_hat = ref.V / (1 - b**ref.t)
    M_tilde = G + b / (1 - b) * M_hat if ref.hp["nesterov"] else M_hat
    if nsr:
        X = M_tilde / (torch.sqrt(M_tilde**2 + ref.hp["alpha"] * V_hat) + eps)
    else:
        X = M_tilde / (torch.sqrt(V_hat) + eps)
    return ref.apply(ref.scale(polar(X), ref.hp["scale"]))


def muon_nsr_step(ref: Reference, G: torch.Tensor) -> torch.Tensor:
    return _variance_adaptive(ref, G, nsr=True)


def muon_vs_step(ref: Reference, G: torch.Tensor) -> torch.Tensor:
    return _variance_adaptive(ref, G, nsr=False)


def spectral_step(ref: Reference, G: torch.Tensor) -> torch.Tensor:
    """BeyondMuon AdamW_NS / SGDW_NS with Ψ_p by SVD."""
    p = ref.hp["power"]
    ref.t += 1
    if ref.hp["direction"] == "adam":
        b1, b2 = ref.hp["betas"]
        ref.M = b1 * ref.M + (1 - b1) * G
        ref.V = b2 * ref.V + (1 - b2) * G * G
        D = (ref.M / (1 - b1**ref.t)) / ((ref.V / (1 - b2**ref.t)).sqrt() + ref.hp["eps"])
    else:
        ref.M = G.clone() if ref.t == 1 else ref.hp["momentum"] * ref.M + G
        D = ref.M
    U = polar(D) if p == 0 else D if p == 1 else spectral(D, p)
    rule = ref.hp["scale"]
    if rule == "auto":
        rule = "keller" if p == 0 else "none"
    return ref.apply(ref.scale(U, rule))


ORACLES = {
    "muon": muon_step,
    "normuon": normuon_step,
    "adamuon": adamuon_step,
    "muon_nsr": muon_nsr_step,
    "muon_vs": muon_vs_step,
    "spectral_muon": spectral_step,
}
"""The oracle of every Muon-family registry name."""
