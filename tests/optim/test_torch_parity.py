"""Muon against torch.optim.Muon, for every registry variant torch can express."""

import pytest
import torch
import torch.optim._muon as torch_muon

import lightning_muon as lm
from lightning_muon.core.orthogonalize import JORDAN, newton_schulz
from lightning_muon.optim.registry import SPECS

SHAPES = [(32, 64), (64, 32), (48, 48), (3, 50)]


def run_pair(ours_kwargs, torch_kwargs, steps=5):
    torch.manual_seed(0)
    weights = [torch.randn(*s) for s in SHAPES]
    ours = [torch.nn.Parameter(w.clone()) for w in weights]
    theirs = [torch.nn.Parameter(w.clone()) for w in weights]
    opt_ours = lm.Muon([{"params": ours, "branch": "muon"}], **ours_kwargs)
    opt_theirs = torch.optim.Muon(theirs, **torch_kwargs)
    for _ in range(steps):
        for a, b in zip(ours, theirs):
            g = torch.randn_like(a)
            a.grad, b.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    return ours, theirs


TORCH_SCALE = {"keller": "original", "moonlight": "match_rms_adamw"}


def torch_equivalents():
    """Every registry variant of Muon that ``torch.optim.Muon`` can express, with torch's arguments."""
    spec = SPECS["muon"]
    cases = []
    for variant in spec.variants:
        hp = spec.hyperparameters(**variant.kwargs)
        if hp["orthogonalizer"] != "jordan" or hp["scale"] not in TORCH_SCALE:
            continue
        theirs = dict(
            lr=hp["lr"], weight_decay=hp["weight_decay"], momentum=hp["momentum"],
            nesterov=hp["nesterov"], ns_steps=hp["ns_steps"], eps=hp["ns_eps"],
            adjust_lr_fn=TORCH_SCALE[hp["scale"]],
        )  # fmt: skip
        cases.append(pytest.param(dict(variant.kwargs), theirs, id=variant.label))
    return cases


def test_the_torch_equivalents_cover_both_scale_rules():
    assert {c.values[1]["adjust_lr_fn"] for c in torch_equivalents()} == set(TORCH_SCALE.values())


@pytest.mark.parametrize(("ours", "theirs"), torch_equivalents())
def test_update_semantics_match_exactly_with_the_same_newton_schulz(monkeypatch, ours, theirs):
    """Momentum, Nesterov, lr scaling and weight decay agree to fp32 round-off.

    torch always runs its Newton–Schulz in bf16; here both sides use the same fp32 iteration, so the
    comparison isolates everything else. The iteration itself is tested against the exact polar factor.
    """
    monkeypatch.setattr(
        torch_muon,
        "_zeropower_via_newtonschulz",
        lambda g, c, s, e: newton_schulz(g, JORDAN, s, e, torch.float32),
    )
    a, b = run_pair({**ours, "ns_dtype": "float32"}, theirs)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=2e-6, rtol=1e-5)


def test_bf16_newton_schulz_agrees_with_torch_muon():
    """Unpatched: both in bf16 (torch normalises in bf16, we in fp32): bf16-level agreement."""
    a, b = run_pair(
        dict(lr=0.02, weight_decay=0.1, ns_dtype="bfloat16", scale="keller"),
        dict(lr=0.02, weight_decay=0.1),
    )
    for x, y in zip(a, b):
        diff = (x - y).abs().max().item()
        assert diff < 2e-3, diff
