"""Independent float64 reference implementations, written from the papers' pseudo-code.

Plain per-matrix loops with the exact SVD polar factor; they share no code with the package.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def polar(X: torch.Tensor) -> torch.Tensor:
    """Exact polar factor U Vᵀ by numpy SVD (null directions dropped)."""
    U, S, Vh = np.linalg.svd(X.numpy(), full_matrices=False)
    keep = S > S.max(initial=0.0) * 1e-13 * max(X.shape)
    return torch.from_numpy((U * keep) @ Vh)


def spectral(X: torch.Tensor, p: float) -> torch.Tensor:
    U, S, Vh = np.linalg.svd(X.numpy(), full_matrices=False)
    return torch.from_numpy((U * S**p) @ Vh)


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
        m, n = self.m, self.n
        if rule == "keller":
            return U * math.sqrt(max(1.0, m / n))
        if rule == "moonlight":
            return U * 0.2 * math.sqrt(max(m, n))
        if rule == "spectral":
            return U * math.sqrt(m / n)
        if rule == "rms":
            return U * 0.2 * math.sqrt(m * n) / U.norm()
        return U

    def apply(self, U: torch.Tensor) -> torch.Tensor:
        lr, wd = self.hp["lr"], self.hp.get("weight_decay", 0.0)
        self.W = self.W - lr * wd * self.W - lr * U
        return self.W


def muon_step(ref: Reference, G: torch.Tensor) -> torch.Tensor:
    """torch.optim.Muon: EMA momentum, Nesterov, polar, sqrt(max(1, m/n))."""
    b = ref.hp["momentum"]
    ref.M = b * ref.M + (1 - b) * G
    X = (1 - b) * G + b * ref.M if ref.hp["nesterov"] else ref.M
    return ref.apply(ref.scale(polar(X), ref.hp["scale"]))


def normuon_step(ref: Reference, G: torch.Tensor) -> torch.Tensor:
    """NorMuon paper, Algorithm 1."""
    b1, b2, eps = ref.hp["momentum"], ref.hp["beta2"], ref.hp["eps"]
    ref.M = b1 * ref.M + (1 - b1) * G
    O = polar(ref.M)
    ref.v = b2 * ref.v + (1 - b2) * (O * O).mean(dim=1, keepdim=True)
    O_hat = O / (ref.v.sqrt() + eps)
    eta_hat = 0.2 * math.sqrt(ref.m * ref.n) / O_hat.norm()
    return ref.apply(eta_hat * O_hat)


def adamuon_step(ref: Reference, G: torch.Tensor) -> torch.Tensor:
    """AdaMuon paper, Algorithm 1 (SGD-sum momentum, as written in the paper)."""
    b, eps = ref.hp["momentum"], ref.hp["eps"]
    ref.M = b * ref.M + G
    X = torch.sign(ref.M) if ref.hp["sign_stabilize"] else ref.M
    O = polar(X)
    ref.V = b * ref.V + (1 - b) * O * O
    O_hat = O / (ref.V.sqrt() + eps)
    gamma = 0.2 * math.sqrt(ref.m * ref.n) / O_hat.norm()
    return ref.apply(gamma * O_hat)


def varmuon_step(ref: Reference, G: torch.Tensor) -> torch.Tensor:
    """Muon-NSR / Muon-VS, official code (NanoGPT muon_nsr.py / muon_vs.py)."""
    b, eps = ref.hp["momentum"], ref.hp["eps"]
    ref.t += 1
    ref.V = b * ref.V + b * (1 - b) * (ref.M - G) ** 2
    ref.M = b * ref.M + (1 - b) * G
    M_hat = ref.M / (1 - b**ref.t)
    V_hat = ref.V / (1 - b**ref.t)
    M_tilde = G + b / (1 - b) * M_hat
    if ref.hp["kind"] == "nsr":
        X = M_tilde / (torch.sqrt(M_tilde**2 + ref.hp["alpha"] * V_hat) + eps)
    else:
        X = M_tilde / (torch.sqrt(V_hat) + eps)
    return ref.apply(ref.scale(polar(X), ref.hp["scale"]))


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
    U = polar(D) * math.sqrt(max(1.0, ref.m / ref.n)) if p == 0 else spectral(D, p)
    return ref.apply(U)
