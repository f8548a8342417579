"""Per-neuron update norm statistics against independent float64 numpy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_muon.diagnostics import (
    frobenius_from_row_norms,
    matrix_view,
    row_norms,
    summarize_row_norms,
    update_rms,
    update_statistics,
    update_to_weight_ratio,
)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(7, 5), (3, 11), (6, 3, 3, 3), (4, 2, 5), (9,), ()])
def test_row_norms_match_numpy(shape: tuple[int, ...]) -> None:
    x = _rand(*shape)
    a = x.numpy().reshape(shape[0] if shape else 1, -1)
    np.testing.assert_allclose(row_norms(x).numpy(), np.linalg.norm(a, axis=1), rtol=1e-12)


def test_conv_weight_is_viewed_out_by_in_k_k() -> None:
    w = _rand(8, 3, 5, 5)
    assert matrix_view(w).shape == (8, 75)
    assert torch.equal(matrix_view(w)[2], w[2].flatten())


def test_row_norms_low_precision_computed_in_float32() -> None:
    x = _rand(5, 4).to(torch.bfloat16)
    r = row_norms(x)
    assert r.dtype == torch.float32
    np.testing.assert_allclose(r.numpy(), np.linalg.norm(x.float().numpy(), axis=1), rtol=1e-6)


def test_summary_matches_numpy() -> None:
    r = torch.rand(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1
    s = summarize_row_norms(r)
    a = r.numpy()
    assert s.num_rows == 50 and s.num_nonfinite == 0
    assert s.mean == pytest.approx(a.mean(), rel=1e-12)
    assert s.std == pytest.approx(a.std(ddof=0), rel=1e-12)
    assert s.cv == pytest.approx(a.std() / a.mean(), rel=1e-12)
    assert (s.min, s.max) == (a.min(), a.max())
    assert s.min_max_ratio == pytest.approx(a.min() / a.max(), rel=1e-12)


def test_summary_skips_and_counts_nonfinite_rows() -> None:
    x = _rand(6, 4)
    x[1, 2] = float("nan")
    x[4, 0] = float("inf")
    s = summarize_row_norms(row_norms(x))
    finite = np.linalg.norm(x.numpy()[[0, 2, 3, 5]], axis=1)
    assert s.num_rows == 6 and s.num_nonfinite == 2
    assert s.mean == pytest.approx(finite.mean(), rel=1e-12)
    assert s.cv == pytest.approx(finite.std() / finite.mean(), rel=1e-12)
    assert math.isnan(update_rms(x)) and math.isnan(frobenius_from_row_norms(row_norms(x)))


def test_degenerate_inputs_give_nan_not_errors() -> None:
    zero = summarize_row_norms(row_norms(torch.zeros(4, 3)))
    assert zero.mean == 0 and math.isnan(zero.cv) and math.isnan(zero.min_max_ratio)
    empty = summarize_row_norms(row_norms(torch.zeros(0, 3)))
    assert empty.num_rows == 0 and math.isnan(empty.mean)
    assert math.isnan(update_rms(torch.zeros(0, 3)))
    assert row_norms(torch.zeros(3, 0)).tolist() == [0.0, 0.0, 0.0]
    all_nan = summarize_row_norms(torch.full((3,), float("nan")))
    assert all_nan.num_nonfinite == 3 and math.isnan(all_nan.std)
    assert math.isnan(update_to_weight_ratio(torch.ones(2, 2), torch.zeros(2, 2)))


def test_rms_and_update_to_weight_match_numpy() -> None:
    d, w = _rand(12, 7, seed=2), _rand(12, 7, seed=3)
    dn, wn = d.numpy(), w.numpy()
    assert update_rms(d) == pytest.approx(np.sqrt((dn**2).mean()), rel=1e-12)
    assert update_to_weight_ratio(d, w) == pytest.approx(
        np.linalg.norm(dn) / np.linalg.norm(wn), rel=1e-12
    )


def test_statistics_from_gathered_shards_equal_whole_matrix() -> None:
    """Row-sharded (FSDP2 Shard(0)) row norms, concatenated, give the whole-matrix statistics."""
    d, w = _rand(10, 6, seed=4), _rand(10, 6, seed=5)
    whole = update_statistics(row_norms(d), row_norms(w), 6)
    parts = update_statistics(
        torch.cat([row_norms(d[:6]), row_norms(d[6:])]),
        torch.cat([row_norms(w[:6]), row_norms(w[6:])]),
        6,
    )
    assert whole == parts
    assert whole.rms == pytest.approx(update_rms(d), rel=1e-12)
    assert whole.update_to_weight == pytest.approx(update_to_weight_ratio(d, w), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 12),
    n=st.integers(1, 12),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 10_000),
)
def test_summary_scale_and_permutation_invariance(m: int, n: int, scale: float, seed: int) -> None:
    d = _rand(m, n, seed=seed)
    base = summarize_row_norms(row_norms(d))
    scaled = summarize_row_norms(row_norms(scale * d))
    perm = torch.randperm(m, generator=torch.Generator().manual_seed(seed))
    permuted = summarize_row_norms(row_norms(d[perm]))
    assert scaled.cv == pytest.approx(base.cv, rel=1e-9, abs=1e-12)
    assert scaled.min_max_ratio == pytest.approx(base.min_max_ratio, rel=1e-9)
    assert permuted.cv == pytest.approx(base.cv, rel=1e-9, abs=1e-12)
    assert 0 < base.min_max_ratio <= 1
