"""Property tests of the pure transforms (hypothesis)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_muon.core.elementwise import (
    nsr_direction_,
    second_moment_,
    sign,
    variance_,
    vs_direction_,
)
from lightning_muon.core.normalize import frobenius_norm, rms_align, row_mean_square
from lightning_muon.core.orthogonalize import JORDAN, POLAR_EXPRESS, YOU, newton_schulz
from lightning_muon.core.spectral import spectral_power

dims = st.integers(min_value=1, max_value=12)
scales = st.floats(min_value=1e-3, max_value=1e3)
tables = st.sampled_from([JORDAN, YOU, POLAR_EXPRESS])
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, m=dims, n=dims, c=scales, table=tables)
def test_newton_schulz_is_scale_invariant(seed, m, n, c, table):
    X = randn(seed, m, n)
    a = newton_schulz(X, table, dtype=torch.float64, eps=0.0)
    b = newton_schulz(c * X, table, dtype=torch.float64, eps=0.0)
    torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, m=dims, n=dims, table=tables)
def test_newton_schulz_is_transpose_equivariant(seed, m, n, table):
    X = randn(seed, m, n)
    torch.testing.assert_close(
        newton_schulz(X.T, table, dtype=torch.float64),
        newton_schulz(X, table, dtype=torch.float64).T,
    )


@settings(max_examples=25, deadline=None)
@given(seed=seeds, b=st.integers(1, 4), m=dims, n=dims)
def test_batched_equals_per_matrix(seed, b, m, n):
    X = randn(seed, b, m, n)
    out = newton_schulz(X, JORDAN, dtype=torch.float64)
    for i in range(b):
        torch.testing.assert_close(out[i], newton_schulz(X[i], JORDAN, dtype=torch.float64))
    P = spectral_power(X, 0.5, method="svd")
    for i in range(b):
        torch.testing.assert_close(P[i], spectral_power(X[i], 0.5, method="svd"))


@settings(max_examples=25, deadline=None)
@given(m=dims, n=dims, table=tables)
def test_zero_input_gives_finite_zero_output(m, n, table):
    Z = torch.zeros(2, m, n)
    assert newton_schulz(Z, table).abs().max() == 0
    assert rms_align(Z, 0.2).abs().max() == 0
    assert torch.isfinite(spectral_power(Z, 0.25)).all()
    assert (
        torch.isfinite(vs_direction_(Z.clone(), Z, 1e-8)).all()
        and torch.isfinite(nsr_direction_(Z.clone(), Z, 1000.0, 1e-8)).all()
    )


@settings(max_examples=40, deadline=None)
@given(seed=seeds, m=dims, n=dims, c=scales, target=st.floats(0.01, 1.0))
def test_rms_align_hits_target_and_ignores_scale(seed, m, n, c, target):
    X = randn(seed, 1, m, n)
    out = rms_align(X, target)
    torch.testing.assert_close(
        frobenius_norm(out) / (m * n) ** 0.5, torch.full((1, 1, 1), target, dtype=torch.float64)
    )
    torch.testing.assert_close(rms_align(c * X, target), out)
    assert row_mean_square(X).shape == (1, m, 1)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, n=dims, c=scales, alpha=st.floats(0.0, 1e4))
def test_variance_adaptive_inputs_ignore_gradient_scale(seed, n, c, alpha):
    G1, G2 = randn(seed, 3, n), randn(seed + 1, 3, n)

    def direction(scale, kind):
        M, gamma = torch.zeros(3, n, dtype=torch.float64), torch.zeros(3, n, dtype=torch.float64)
        for G in (G1, G2):
            variance_(gamma, M, scale * G, 0.9)
            M.lerp_(scale * G, 0.1)
        if kind == "vs":
            return vs_direction_(M, gamma, 0.0)
        return nsr_direction_(M, gamma, alpha, 0.0)

    torch.testing.assert_close(direction(c, "vs"), direction(1.0, "vs"))
    nsr = direction(c, "nsr")
    torch.testing.assert_close(nsr, direction(1.0, "nsr"))
    assert nsr.abs().max() <= 1.0
    torch.testing.assert_close(sign(c * G1), sign(G1))


@settings(max_examples=20, deadline=None)
@given(seed=seeds, n=dims)
def test_second_moment_is_the_ema_of_squares(seed, n):
    V = torch.zeros(n, dtype=torch.float64)
    xs = [randn(seed + i, n) for i in range(3)]
    for x in xs:
        second_moment_(V, x, 0.9)
    expected = 0.1 * (0.81 * xs[0] ** 2 + 0.9 * xs[1] ** 2 + xs[2] ** 2)
    torch.testing.assert_close(V, expected)
