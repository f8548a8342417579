"""Singular-value statistics against independent float64 computations (numpy, torch SVD)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_muon.diagnostics import (
    condition_number,
    effective_rank,
    orthogonality_error,
    singular_values,
    spectrum_stats,
    stable_rank,
)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(9, 4), (4, 9), (6, 6), (5, 2, 3, 3)])
def test_singular_values_match_numpy_and_torch_float64(shape: tuple[int, ...]) -> None:
    x = _rand(*shape)
    a = x.numpy().reshape(shape[0], -1)
    ref = np.linalg.svd(a, compute_uv=False)
    np.testing.assert_allclose(singular_values(x).numpy(), ref, rtol=1e-10)
    torch.testing.assert_close(singular_values(x), torch.linalg.svdvals(x.reshape(shape[0], -1)))
    f32 = singular_values(x.float())
    assert f32.dtype == torch.float32
    np.testing.assert_allclose(f32.numpy(), ref, rtol=1e-4)


def test_statistics_match_numpy_definitions() -> None:
    x = _rand(20, 12, seed=1) @ torch.diag(torch.logspace(0, -3, 12, dtype=torch.float64))
    a = x.numpy()
    s = np.linalg.svd(a, compute_uv=False)
    stats, sv = spectrum_stats(x, top_k=4)
    assert stats.shape == (20, 12)
    assert stats.condition_number == pytest.approx(np.linalg.cond(a), rel=1e-9)
    assert stats.stable_rank == pytest.approx(
        np.linalg.norm(a, "fro") ** 2 / np.linalg.norm(a, 2) ** 2, rel=1e-9
    )
    p = s / s.sum()
    assert stats.effective_rank == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    np.testing.assert_allclose(stats.top_k, s[:4], rtol=1e-10)
    assert stats.sigma_max == pytest.approx(s[0]) and stats.sigma_min == pytest.approx(s[-1])


@pytest.mark.parametrize("shape", [(8, 5), (5, 8)])
def test_orthogonality_error_is_distance_to_polar_factor(shape: tuple[int, int]) -> None:
    o = _rand(*shape, seed=2)
    u, s, vt = np.linalg.svd(o.numpy(), full_matrices=False)
    polar = u @ vt
    ref = np.linalg.norm(o.numpy() - polar) / math.sqrt(min(shape))
    stats, _ = spectrum_stats(o)
    assert stats.orthogonality_error == pytest.approx(ref, rel=1e-9)
    q = torch.linalg.qr(_rand(max(shape), min(shape), seed=3)).Q
    q = q if shape[0] >= shape[1] else q.T
    assert spectrum_stats(q)[0].orthogonality_error < 1e-12
    assert spectrum_stats(q)[0].condition_number == pytest.approx(1.0, abs=1e-12)


def test_known_values() -> None:
    sv = torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)
    assert condition_number(sv) == 4.0
    assert stable_rank(sv) == pytest.approx(21 / 16)
    assert effective_rank(torch.ones(5)) == pytest.approx(5.0)
    assert effective_rank(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert orthogonality_error(torch.ones(3)) == 0.0


def test_rank_deficient_zero_empty_and_vector() -> None:
    assert spectrum_stats(torch.diag(torch.tensor([2.0, 0.0])))[0].condition_number == math.inf
    zero, _ = spectrum_stats(torch.zeros(3, 4))
    assert math.isnan(zero.condition_number) and math.isnan(zero.stable_rank)
    assert math.isnan(zero.effective_rank)
    empty, sv = spectrum_stats(torch.zeros(0, 4), top_k=2)
    assert sv.numel() == 0 and math.isnan(empty.sigma_max) and len(empty.top_k) == 2
    vec, sv = spectrum_stats(torch.tensor([3.0, 4.0]), top_k=2)
    assert sv.tolist() == [5.0] and vec.condition_number == 1.0
    assert vec.top_k[0] == 5.0 and math.isnan(vec.top_k[1])


def test_nonfinite_input_is_reported_not_decomposed() -> None:
    x = _rand(4, 4)
    x[0, 0], x[2, 1] = float("nan"), float("inf")
    stats, sv = spectrum_stats(x)
    assert stats.num_nonfinite == 2 and sv.numel() == 0
    assert math.isnan(stats.condition_number)
    with pytest.raises(ValueError, match="top_k"):
        spectrum_stats(x, top_k=-1)


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(1, 10),
    n=st.integers(1, 10),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 10_000),
)
def test_scale_and_transpose_invariance(m: int, n: int, scale: float, seed: int) -> None:
    x = _rand(m, n, seed=seed)
    base, _ = spectrum_stats(x)
    for other, _ in (spectrum_stats(scale * x), spectrum_stats(x.T)):
        assert other.condition_number == pytest.approx(base.condition_number, rel=1e-6)
        assert other.stable_rank == pytest.approx(base.stable_rank, rel=1e-9)
        assert other.effective_rank == pytest.approx(base.effective_rank, rel=1e-9)
    assert 1 - 1e-9 <= base.stable_rank <= min(m, n) + 1e-9
    assert 1 - 1e-9 <= base.effective_rank <= min(m, n) + 1e-9
