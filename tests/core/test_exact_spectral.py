"""The exact Ψ_p = U_r Σ_r^p V_rᵀ keeps only the numerical rank, as the exact polar factor does.

The oracle is numpy's float64 SVD of the same input, truncated to the rank the input was built
with: it shares no code with the package.
"""

import numpy as np
import pytest
import torch

import lightning_muon as lm
from lightning_muon.core import spectral
from lightning_muon.core.orthogonalize import exact_polar


def rank_two(m=64, n=64, dtype=torch.float32, seed=0):
    """An exactly rank-2 matrix (in float64), rounded to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, 2, dtype=torch.float64, generator=g)
    B = torch.randn(2, n, dtype=torch.float64, generator=g)
    return (A @ B).to(dtype)


def truncated_power(X: torch.Tensor, p: float, rank: int) -> np.ndarray:
    U, S, Vh = np.linalg.svd(X.double().numpy(), full_matrices=False)
    return (U[:, :rank] * S[:rank] ** p) @ Vh[:rank]


def relative_error(X: torch.Tensor, expected: np.ndarray) -> float:
    return float(np.linalg.norm(X.double().numpy() - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_exact_power_of_a_rank_two_fp32_matrix_drops_the_round_off_directions(p):
    """Regression: the round-off singular values (~1e-8·σ_max) raised to p = ¼ made a 3.9% error."""
    X = rank_two()
    error = relative_error(spectral.spectral_power(X, p, method="svd"), truncated_power(X, p, 2))
    assert error < 1e-6, error


@pytest.mark.parametrize(
    "exact",
    [
        pytest.param({"spectral_method": "svd"}, id="spectral_method"),
        pytest.param({"orthogonalizer": "svd"}, id="orthogonalizer"),
    ],
)
@pytest.mark.parametrize("p", [0.25, 0.5])
def test_spectral_muon_in_exact_mode_is_exact_on_rank_deficient_input(p, exact):
    W = torch.nn.Parameter(torch.zeros(64, 64))
    opt = lm.SpectralMuon(
        [{"params": [W], "branch": "muon"}], power=p, direction="momentum", **exact
    )
    W.grad = rank_two(seed=1)
    opt.capture_directions([W])
    opt.step()  # the first heavy-ball step is the gradient itself: O = Ψ_p(G)
    error = relative_error(opt.captured_directions[W], truncated_power(W.grad, p, 2))
    assert error < 1e-6, error


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(64, 64), (40, 12), (12, 40)])
def test_power_zero_is_the_exact_polar_factor_with_the_same_cutoff(dtype, shape):
    X = rank_two(*shape, dtype=dtype, seed=3)
    polar = exact_polar(X)
    torch.testing.assert_close(spectral.exact_spectral_power(X, 0.0), polar, atol=0, rtol=0)
    # and that cutoff leaves exactly the two directions of the signal
    assert int((torch.linalg.svdvals(polar.double()) > 0.5).sum()) == 2


def test_full_rank_inputs_and_degenerate_shapes_are_unchanged_by_the_cutoff():
    g = torch.Generator().manual_seed(4)
    for shape in [(10, 20), (20, 10), (1, 9), (9, 1)]:
        X = torch.randn(*shape, dtype=torch.float64, generator=g)
        k = min(shape)
        torch.testing.assert_close(
            spectral.exact_spectral_power(X, 0.25),
            torch.from_numpy(truncated_power(X, 0.25, k)),
            atol=1e-12,
            rtol=1e-12,
        )
    zero = torch.zeros(6, 9)
    assert torch.equal(spectral.exact_spectral_power(zero, 0.5), zero)
    assert spectral.exact_spectral_power(torch.zeros(0, 4), 0.5).shape == (0, 4)


def test_an_explicit_rtol_moves_the_cutoff():
    X = rank_two(dtype=torch.float64, seed=5)
    X = X + 1e-6 * torch.randn(
        64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(6)
    )
    kept = int((torch.linalg.svdvals(spectral.exact_spectral_power(X, 0.0)) > 0.5).sum())
    assert kept == 64  # noise of 1e-6 is signal at float64 round-off
    coarse = spectral.exact_spectral_power(X, 0.0, rtol=1e-4)
    assert int((torch.linalg.svdvals(coarse) > 0.5).sum()) == 2
