"""Newton–Schulz against the exact float64 polar factor, and its input handling."""

import pytest
import torch

from lightning_muon.core.orthogonalize import (
    JORDAN,
    POLAR_EXPRESS,
    YOU,
    NewtonSchulzTable,
    default_ns_dtype,
    exact_polar,
    newton_schulz,
)
from lightning_muon.core.orthogonalizers import make_orthogonalizer

CLASSICAL = NewtonSchulzTable("classical", ((15 / 8, -10 / 8, 3 / 8),))


def svd_polar(X: torch.Tensor) -> torch.Tensor:
    """Independent oracle: U Vᵀ from numpy's SVD in float64."""
    import numpy as np

    U, _, Vh = np.linalg.svd(X.double().numpy(), full_matrices=False)
    return torch.from_numpy(U @ Vh)


@pytest.mark.parametrize("shape", [(16, 40), (40, 16), (24, 24)])
def test_converged_iteration_equals_exact_polar(shape):
    X = torch.randn(*shape, dtype=torch.float64)
    O = newton_schulz(X, CLASSICAL, steps=60, dtype=torch.float64)
    torch.testing.assert_close(O, svd_polar(X), atol=1e-9, rtol=0)


def test_exact_polar_matches_numpy_svd():
    X = torch.randn(3, 12, 20, dtype=torch.float64)
    for i in range(3):
        torch.testing.assert_close(exact_polar(X)[i], svd_polar(X[i]), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("table", "band"),
    [(JORDAN, (0.55, 1.25)), (YOU, (0.85, 1.15)), (POLAR_EXPRESS, (0.80, 1.16))],
)
def test_singular_values_lie_in_the_published_band(table, band):
    X = torch.randn(64, 128)
    s = torch.linalg.svdvals(newton_schulz(X, table, steps=5, dtype=torch.float32).double())
    assert band[0] <= s.min() and s.max() <= band[1], (s.min(), s.max())
    # Same singular vectors as the exact polar factor: O·polarᵀ is symmetric positive semi-definite.
    P = svd_polar(X)
    C = newton_schulz(X.double(), table, dtype=torch.float64) @ P.T
    torch.testing.assert_close(C, C.T, atol=1e-6, rtol=0)


def test_batched_equals_per_matrix_and_tall_is_transposed():
    X = torch.randn(5, 30, 12)
    batched = newton_schulz(X, JORDAN)
    for i in range(5):
        torch.testing.assert_close(batched[i], newton_schulz(X[i], JORDAN), atol=1e-6, rtol=0)
        torch.testing.assert_close(batched[i], newton_schulz(X[i].T, JORDAN).T, atol=1e-6, rtol=0)


def test_zero_rank_deficient_and_degenerate_shapes_are_finite():
    assert newton_schulz(torch.zeros(4, 6), JORDAN).abs().max() == 0
    low_rank = torch.randn(20, 2) @ torch.randn(2, 30)
    assert torch.isfinite(newton_schulz(low_rank, JORDAN)).all()
    for shape in [(1, 7), (7, 1), (0, 5), (5, 0), (2, 0, 3)]:
        out = newton_schulz(torch.randn(*shape), JORDAN)
        assert out.shape == torch.Size(shape) and torch.isfinite(out).all()
    row = torch.randn(1, 9, dtype=torch.float64)
    torch.testing.assert_close(exact_polar(row), row / row.norm())


def test_exact_polar_drops_null_directions():
    X = torch.randn(10, 3, dtype=torch.float64) @ torch.randn(3, 8, dtype=torch.float64)
    s = torch.linalg.svdvals(exact_polar(X))
    torch.testing.assert_close(s[:3], torch.ones(3, dtype=torch.float64))
    assert s[3:].abs().max() < 1e-12
    assert exact_polar(torch.zeros(3, 4)).abs().max() == 0


def test_dtype_follows_device_and_can_be_overridden():
    assert default_ns_dtype(torch.device("cpu")) == torch.float32  # pinned by tests/conftest.py
    X = torch.randn(8, 16)
    bf16 = newton_schulz(X, JORDAN, dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32  # output keeps the input dtype
    torch.testing.assert_close(bf16, newton_schulz(X, JORDAN), atol=0.05, rtol=0)


def test_make_orthogonalizer_names_and_custom_tables():
    X = torch.randn(6, 10, dtype=torch.float64)
    torch.testing.assert_close(make_orthogonalizer("svd")(X), svd_polar(X))
    custom = make_orthogonalizer([(15 / 8, -10 / 8, 3 / 8)], steps=60, dtype=torch.float64)
    torch.testing.assert_close(custom(X), svd_polar(X), atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="orthogonalizer: 'qr'"):
        make_orthogonalizer("qr")
    with pytest.raises(ValueError, match="orthogonalizer"):
        make_orthogonalizer([(1.0, float("inf"), 0.0)])
    with pytest.raises(ValueError, match="matrices"):
        newton_schulz(torch.randn(5), JORDAN)


def test_bf16_iteration_is_as_accurate_as_torch_muons():
    """bf16 (the CUDA default) rounds no worse than torch.optim.Muon's own bf16 Newton–Schulz."""
    import torch.optim._muon as torch_muon

    torch.manual_seed(0)
    ours, theirs = [], []
    for _ in range(4):
        X = torch.randn(128, 384)
        exact = newton_schulz(X.double(), JORDAN, dtype=torch.float64)
        ours.append(
            (newton_schulz(X, JORDAN, dtype=torch.bfloat16).double() - exact).norm() / exact.norm()
        )
        ref = torch_muon._zeropower_via_newtonschulz(X, JORDAN.coefficients[0], 5, 1e-7)
        theirs.append((ref.double() - exact).norm() / exact.norm())
    assert sum(ours) <= 1.1 * sum(theirs), (sum(ours), sum(theirs))
