"""Every registry variant against an independent float64 oracle over several steps (exact polar factor).

The oracles (``tests/optim/reference.py``) are numpy loops written from the papers; they share no
code with the package. Each variant runs with the exact orthogonalizer (``orthogonalizer="svd"``,
and ``spectral_method="svd"`` for SpectralMuon's ``p`` in {1/4, 1/2}), so variants that differ only
in their Newton–Schulz table collapse into one case.
"""

import pytest
import torch

import lightning_muon as lm
from lightning_muon.optim.registry import SPECS, available_names

from .reference import ORACLES, Reference

SHAPES = [(12, 20), (20, 12), (16, 16), (1, 9), (9, 1), (10, 14), (6, 2, 3)]
RANK_DEFICIENT = 5  # index of the (10, 14) weight: its gradients all have rank 2
STEPS = 6


def tolerance(index: int, lr: float) -> float:
    """An elementwise transform of a rank-2 momentum (NSR, VS, Adam ratio) is full rank but
    ill-conditioned; its polar factor is then exact only to about eps·cond, an error of the update
    that the weights see times the lr (1e-8 at lr 1e-3)."""
    return 1e-5 * max(lr, 1e-3) if index == RANK_DEFICIENT else 1e-10


def exact(spec, kwargs):
    """``kwargs`` with every orthogonalization exact."""
    kwargs = {**kwargs, "orthogonalizer": "svd"}
    kwargs.pop("ns_steps", None)
    if spec.name == "spectral_muon":
        kwargs["spectral_method"] = "svd"
    return kwargs


def exact_cases():
    seen, cases = set(), []
    for name in available_names("muon"):
        spec = SPECS[name]
        for variant in spec.variants:
            kwargs = exact(spec, variant.kwargs)
            key = (name, repr(sorted(kwargs.items())))
            if key not in seen:
                seen.add(key)
                cases.append(pytest.param(spec, kwargs, id=f"{name}-{variant.label}"))
    return cases


def gradients(weights, generator):
    grads = [torch.randn(w.shape, dtype=torch.float64, generator=generator) for w in weights]
    low = torch.randn(10, 2, dtype=torch.float64, generator=generator)
    grads[RANK_DEFICIENT] = low @ torch.randn(2, 14, dtype=torch.float64, generator=generator)
    return grads


def test_every_muon_family_entry_has_an_oracle():
    assert set(ORACLES) == set(available_names("muon"))


@pytest.mark.parametrize(("spec", "kwargs"), exact_cases())
def test_matches_float64_oracle(spec, kwargs):
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(*s, dtype=torch.float64, generator=generator) for s in SHAPES]
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = spec.build([{"params": params, "branch": "muon"}], **kwargs)
    hp = spec.hyperparameters(**kwargs)
    refs = [Reference(w.reshape(w.shape[0], -1), **hp) for w in weights]
    for _ in range(STEPS):
        grads = gradients(weights, generator)
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        expected = [ORACLES[spec.name](r, g.reshape(r.m, r.n)) for r, g in zip(refs, grads)]
    for i, (p, e) in enumerate(zip(params, expected)):
        tol = tolerance(i, hp["lr"])
        torch.testing.assert_close(p.detach(), e.reshape(p.shape), atol=tol, rtol=tol)


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
