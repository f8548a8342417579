"""Ψ_p by coupled Newton iterations against the float64 SVD definition."""

import pytest
import torch

from lightning_muon.core.spectral import coupled_sqrt_invsqrt, inverse_fourth_root, spectral_power


def svd_power(U: torch.Tensor, p: float) -> torch.Tensor:
    Us, S, Vh = torch.linalg.svd(U.double(), full_matrices=False)
    return Us @ torch.diag_embed(S**p) @ Vh


def well_conditioned(m: int, n: int) -> torch.Tensor:
    Q1, _ = torch.linalg.qr(torch.randn(m, m, dtype=torch.float64))
    Q2, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    k = min(m, n)
    S = torch.linspace(0.5, 2.0, k, dtype=torch.float64)
    return Q1[:, :k] @ torch.diag(S) @ Q2[:, :k].T


def test_coupled_iteration_gives_square_root_and_inverse():
    B = torch.randn(12, 12, dtype=torch.float64)
    A = B @ B.T + 12 * torch.eye(12, dtype=torch.float64)
    root, inv_root = coupled_sqrt_invsqrt(A, iters=30, eps=0.0)
    A_r = A + 1e-4 * A.trace() / 12 * torch.eye(12, dtype=torch.float64)
    torch.testing.assert_close(root @ root, A_r, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(
        root @ inv_root, torch.eye(12, dtype=torch.float64), rtol=0, atol=1e-8
    )
    fourth = inverse_fourth_root(A, iters=30, eps=0.0)
    assert torch.isfinite(fourth).all()


@pytest.mark.parametrize("p", [0.25, 0.5])
@pytest.mark.parametrize("shape", [(10, 20), (20, 10)])
def test_newton_matches_svd_definition(p, shape):
    U = well_conditioned(*shape)
    torch.testing.assert_close(
        spectral_power(U, p, method="newton"), svd_power(U, p), atol=2e-3, rtol=0
    )
    torch.testing.assert_close(
        spectral_power(U, p, method="svd"), svd_power(U, p), atol=1e-10, rtol=0
    )


def test_identity_power_and_bad_arguments():
    U = torch.randn(3, 4, 5)
    torch.testing.assert_close(spectral_power(U, 1.0), U)
    with pytest.raises(ValueError, match="p: 0.3"):
        spectral_power(U, 0.3)
    with pytest.raises(ValueError, match="method"):
        spectral_power(U, 0.5, method="eig")


def test_zero_input_is_finite():
    assert torch.isfinite(spectral_power(torch.zeros(6, 9), 0.5)).all()
