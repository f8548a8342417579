"""Muon against torch.optim.Muon with matching settings."""

import pytest
import torch
import torch.optim._muon as torch_muon

import lightning_muon as lm
from lightning_muon.core.orthogonalize import JORDAN, newton_schulz

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


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (dict(lr=0.02, weight_decay=0.1, scale="keller"), dict(lr=0.02, weight_decay=0.1)),
        (dict(lr=0.01, weight_decay=0.0, nesterov=False, momentum=0.9, scale="moonlight"),
         dict(lr=0.01, weight_decay=0.0, nesterov=False, momentum=0.9, adjust_lr_fn="match_rms_adamw")),
    ],
)  # fmt: skip
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
        dict(lr=0.02, weight_decay=0.1, ns_dtype="bfloat16"), dict(lr=0.02, weight_decay=0.1)
    )
    for x, y in zip(a, b):
        diff = (x - y).abs().max().item()
        assert diff < 2e-3, diff
