"""One finite gradient spike (1e20, 1e30 in fp32) passes the finite check; the Newton–Schulz input
norm must not overflow to inf (which made the update exactly 0 and froze the hidden weights for
hundreds of steps while the momentum decayed)."""

from __future__ import annotations

import pytest
import torch

from lightning_muon.core.orthogonalize import newton_schulz

from .entry_kit import make, net

#: Algorithms whose direction is scale-invariant (no elementwise squares of the raw gradient).
NORM_BASED = ["muon", "normuon", "adamuon"]


def first_update(name: str, spike: float, orthogonalizer: str = "svd") -> torch.Tensor:
    model = net()
    opt = make(name, model, orthogonalizer=orthogonalizer)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
    model.hidden.weight.grad.mul_(spike)
    before = model.hidden.weight.detach().clone()
    opt.step()
    return (model.hidden.weight.detach() - before) / opt.param_groups[0]["lr"], model, opt


@pytest.mark.parametrize("spike", [1e20, 1e30])
@pytest.mark.parametrize("name", NORM_BASED)
def test_a_spike_gives_the_same_unit_spectral_norm_update_as_an_ordinary_gradient(name, spike):
    ordinary, _, _ = first_update(name, 1.0)
    spiked, _, _ = first_update(name, spike)
    assert torch.isfinite(spiked).all()
    # the first step is scale-free (tolerance: fp32 weights differenced at lr 1e-3)
    torch.testing.assert_close(spiked, ordinary, rtol=1e-3, atol=1e-4)
    if name == "muon":  # polar factor times 0.2·sqrt(max(m, n)) (Moonlight): spectral norm exactly that
        sigma = torch.linalg.matrix_norm(spiked.double(), ord=2).item()
        assert sigma == pytest.approx(0.2 * max(spiked.shape) ** 0.5, rel=1e-4)


@pytest.mark.parametrize("spike", [1e20, 1e30])
@pytest.mark.parametrize("name", NORM_BASED)
def test_training_continues_after_a_spike(name, spike):
    """With the default Newton–Schulz (whose input norm overflowed): every later step moves."""
    _, model, opt = first_update(name, spike, orthogonalizer="jordan")
    for step in range(10):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(100 + step))
        before = model.hidden.weight.detach().clone()
        opt.step()
        moved = torch.linalg.matrix_norm(model.hidden.weight.detach() - before, ord=2).item()
        assert moved > 0.5 * opt.param_groups[0]["lr"], (step, moved)  # not frozen


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_safe_frobenius_norm_is_finite_and_exact_for_huge_and_ordinary_inputs(dtype):
    from lightning_muon.core.normalize import safe_frobenius_norm

    big = 1e30 if dtype != torch.float64 else 1e300
    x = torch.randn(3, 8, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
    x[1] *= big
    wide = torch.float64 if dtype != torch.float64 else None
    norm = safe_frobenius_norm(x, dtype=wide if dtype != torch.float64 else None)
    assert torch.isfinite(norm).all()
    exact = [torch.linalg.vector_norm(m.double() / (big if i == 1 else 1)) * (big if i == 1 else 1)
             for i, m in enumerate(x)]  # fmt: skip
    for got, want in zip(norm.flatten().tolist(), exact, strict=True):
        assert got == pytest.approx(float(want), rel=1e-6)


def test_newton_schulz_of_a_spiked_matrix_is_the_ordinary_result():
    x = torch.randn(16, 24, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(newton_schulz(x * 1e30), newton_schulz(x), rtol=1e-4, atol=1e-5)
