"""Each algorithm against an independent float64 reference over several steps (exact polar factor)."""

import pytest
import torch

import lightning_muon as lm

from .reference import Reference, adamuon_step, muon_step, normuon_step, spectral_step, varmuon_step

SHAPES = [(12, 20), (20, 12), (16, 16), (1, 9), (9, 1)]
STEPS = 6

CASES = [
    (
        "muon-keller",
        lm.Muon,
        dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.1, scale="keller"),
        muon_step,
    ),
    (
        "muon-plain-moonlight",
        lm.Muon,
        dict(lr=0.02, momentum=0.9, nesterov=False, weight_decay=0.0, scale="moonlight"),
        muon_step,
    ),
    (
        "muon-spectral",
        lm.Muon,
        dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.0, scale="spectral"),
        muon_step,
    ),
    (
        "muon-rms",
        lm.Muon,
        dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.0, scale="rms"),
        muon_step,
    ),
    (
        "normuon",
        lm.NorMuon,
        dict(lr=1e-3, momentum=0.95, beta2=0.95, eps=1e-8, weight_decay=0.1),
        normuon_step,
    ),
    (
        "adamuon",
        lm.AdaMuon,
        dict(lr=1e-3, momentum=0.95, eps=1e-8, weight_decay=0.1, sign_stabilize=True),
        adamuon_step,
    ),
    (
        "muon+adam",
        lm.AdaMuon,
        dict(lr=1e-3, momentum=0.9, eps=1e-8, weight_decay=0.0, sign_stabilize=False),
        adamuon_step,
    ),
    (
        "muon_nsr",
        lm.MuonNSR,
        dict(lr=1e-3, momentum=0.95, alpha=1000.0, eps=1e-8, weight_decay=0.1, scale="moonlight"),
        varmuon_step,
    ),
    (
        "muon_nsr-alpha10-keller",
        lm.MuonNSR,
        dict(lr=1e-3, momentum=0.9, alpha=10.0, eps=1e-8, weight_decay=0.0, scale="keller"),
        varmuon_step,
    ),
    (
        "muon_vs",
        lm.MuonVS,
        dict(lr=1e-3, momentum=0.95, eps=1e-8, weight_decay=0.1, scale="moonlight"),
        varmuon_step,
    ),
    (
        "spectral-adam-half",
        lm.SpectralMuon,
        dict(lr=1e-2, power=0.5, direction="adam", betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0),
        spectral_step,
    ),
    (
        "spectral-adam-quarter",
        lm.SpectralMuon,
        dict(lr=1e-2, power=0.25, direction="adam", betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1),
        spectral_step,
    ),
    (
        "spectral-momentum-zero",
        lm.SpectralMuon,
        dict(lr=1e-2, power=0.0, direction="momentum", momentum=0.9, weight_decay=0.0),
        spectral_step,
    ),
    (
        "spectral-momentum-half",
        lm.SpectralMuon,
        dict(lr=1e-2, power=0.5, direction="momentum", momentum=0.9, weight_decay=0.0),
        spectral_step,
    ),
]


@pytest.mark.parametrize(("label", "cls", "hp", "reference"), CASES, ids=[c[0] for c in CASES])
def test_matches_float64_reference(label, cls, hp, reference):
    torch.manual_seed(0)
    weights = [torch.randn(*s, dtype=torch.float64) for s in SHAPES]
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    extra = {"orthogonalizer": "svd"}
    if cls is lm.SpectralMuon:
        extra["spectral_method"] = "svd"
    opt = cls([{"params": params, "branch": "muon"}], **hp, **extra)
    ref_hp = dict(hp)
    if cls is lm.MuonNSR:
        ref_hp["kind"] = "nsr"
    if cls is lm.MuonVS:
        ref_hp.update(kind="vs", alpha=None)
    refs = [Reference(w, **ref_hp) for w in weights]
    for _ in range(STEPS):
        grads = [torch.randn_like(w) for w in weights]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        expected = [reference(r, g) for r, g in zip(refs, grads)]
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e, atol=1e-10, rtol=1e-10)


def test_spectral_adam_power_one_is_adamw():
    """Ψ_1 of the Adam direction is AdamW itself: compare with torch.optim.AdamW."""
    torch.manual_seed(1)
    w = torch.randn(10, 14)
    ours = torch.nn.Parameter(w.clone())
    theirs = torch.nn.Parameter(w.clone())
    opt = lm.SpectralMuon(
        [{"params": [ours], "branch": "muon"}],
        lr=1e-2,
        power=1,
        betas=(0.9, 0.95),
        eps=1e-8,
        weight_decay=0.1,
    )
    ref = torch.optim.AdamW([theirs], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn_like(w)
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adamw_branch_matches_torch_adamw(dtype):
    torch.manual_seed(2)
    model = torch.nn.Sequential(
        torch.nn.Embedding(30, 8),
        torch.nn.Linear(8, 8),
        torch.nn.LayerNorm(8),
        torch.nn.Linear(8, 30),
    ).to(dtype)
    opt = lm.NorMuon(
        model,
        lr=3e-3,
        adamw_lr_ratio=0.5,
        adamw_betas=(0.8, 0.99),
        adamw_eps=1e-7,
        adamw_weight_decay=0.01,
    )
    adamw_params = opt.param_groups[1]["params"]
    shadow = [torch.nn.Parameter(p.detach().float().clone()) for p in adamw_params]
    ref = torch.optim.AdamW(shadow, lr=1.5e-3, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.01)
    for _ in range(4):
        for p, s in zip(adamw_params, shadow):
            g = torch.randn_like(s)
            p.grad, s.grad = g.to(dtype), g.to(dtype).float()
        for p in opt.param_groups[0]["params"]:
            p.grad = torch.randn_like(p)
        opt.step()
        ref.step()
        for p, s in zip(adamw_params, shadow):
            s.data.copy_(p.detach().float()) if dtype != torch.float32 else None
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    for p, s in zip(adamw_params, shadow):
        torch.testing.assert_close(p.detach().float(), s.detach(), atol=tol, rtol=tol)
    assert all(opt.state[p]["exp_avg"].dtype == torch.float32 for p in adamw_params)
