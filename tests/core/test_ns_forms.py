"""The direct and Gram forms of Newton–Schulz against a textbook numpy iteration.

Both forms are exact rewritings of ``X ← aX + (bA + cA²)X``; in float64 they must agree with the
textbook loop to round-off. In fp32 the Gram form's error is round-off times the norm of the
product of the ``P``'s (``≤ a^5 ≈ 490`` per restart segment), about ``500·eps ≈ 6e-5``: larger than
the direct form's, far smaller than bf16 round-off (4e-3) and than the iteration's own distance to
the polar factor (~0.3).
"""

import numpy as np
import pytest
import torch

from lightning_muon.core.orthogonalize import (
    GRAM_ASPECT,
    GRAM_SEGMENT,
    JORDAN,
    POLAR_EXPRESS,
    YOU,
    newton_schulz,
    ns_form,
)


def textbook(X: torch.Tensor, table, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Independent oracle: the quintic iteration as written in the papers, numpy float64, one matrix."""
    Y = X.double().numpy()
    tall = Y.shape[0] > Y.shape[1]
    if tall:
        Y = Y.T
    Y = Y / (table.norm_scale * np.linalg.norm(Y) + eps)
    for a, b, c in table.schedule(steps):
        A = Y @ Y.T
        Y = a * Y + (b * A + c * A @ A) @ Y
    return torch.from_numpy(Y.T if tall else Y)


def polar(X: torch.Tensor) -> torch.Tensor:
    U, _, Vh = np.linalg.svd(X.numpy(), full_matrices=False)
    return torch.from_numpy(U @ Vh)


def ill_conditioned(m: int, n: int, low: float = 1e-6) -> torch.Tensor:
    U, _ = torch.linalg.qr(torch.randn(m, m, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, m, dtype=torch.float64))
    S = torch.logspace(0, np.log10(low), m, dtype=torch.float64)
    return (U * S) @ V.T


@pytest.mark.parametrize("form", ["direct", "gram"])
@pytest.mark.parametrize("table", [JORDAN, YOU, POLAR_EXPRESS], ids=lambda t: t.name)
@pytest.mark.parametrize("steps", [1, 5, 7, 12])
def test_both_forms_equal_the_textbook_iteration_in_float64(form, table, steps):
    X = torch.randn(3, 12, 40, dtype=torch.float64)
    out = newton_schulz(X, table, steps, dtype=torch.float64, form=form)
    for i in range(3):
        torch.testing.assert_close(out[i], textbook(X[i], table, steps), atol=1e-10, rtol=0)


@pytest.mark.parametrize("shape", [(40, 12), (12, 40), (16, 16)])
def test_gram_form_handles_tall_square_and_ill_conditioned_input(shape):
    X = ill_conditioned(*sorted(shape))
    X = X if shape[0] <= shape[1] else X.T
    expected = textbook(X, JORDAN, 5)
    torch.testing.assert_close(
        newton_schulz(X, JORDAN, 5, dtype=torch.float64, form="gram"), expected, atol=1e-10, rtol=0
    )
    fp32 = newton_schulz(X.float(), JORDAN, 5, form="gram").double()
    gram_err = (fp32 - expected).abs().max().item()
    eps = torch.finfo(torch.float32).eps
    assert gram_err < 8 * JORDAN.coefficients[0][0] ** 5 * eps, gram_err  # ~4.6e-4
    distance_to_polar = (expected - polar(X)).abs().max().item()
    assert gram_err < distance_to_polar / 100, (gram_err, distance_to_polar)


def test_restarts_keep_long_schedules_accurate_in_fp32():
    """15 steps (SpectralMuon's p = 0 default): the product of P's would reach a^15 ~ 1e8 without restarts."""
    X = ill_conditioned(32, 128, low=1e-7)
    expected = textbook(X, JORDAN, 15)
    gram = newton_schulz(X.float(), JORDAN, 15, form="gram").double()
    direct = newton_schulz(X.float(), JORDAN, 15, form="direct").double()
    assert (gram - expected).abs().max() < max(1e-3, 3 * (direct - expected).abs().max())
    assert GRAM_SEGMENT <= 6


def test_form_choice_by_aspect_and_dtype():
    assert ns_form(768, 3072, torch.float64) == "gram"
    assert ns_form(3072, 768, torch.float64) == "gram"  # tall: transposed first
    assert ns_form(768, 2304, torch.float64) == "gram"
    assert ns_form(768, 768, torch.float64) == "direct"
    assert ns_form(768, int(GRAM_ASPECT * 768) - 1, torch.float64) == "direct"
    assert (
        ns_form(768, 3072, torch.float32) == "direct"
    )  # fp32 Gram loses accuracy when ill-conditioned
    assert ns_form(768, 3072, torch.bfloat16) == "direct"  # low precision keeps the direct form
    assert ns_form(768, 3072, torch.float16) == "direct"


def test_auto_form_is_used_and_input_is_not_modified():
    X = torch.randn(2, 16, 64, dtype=torch.float64)
    before = X.clone()
    auto = newton_schulz(X, JORDAN, dtype=torch.float64)
    assert torch.equal(X, before)
    torch.testing.assert_close(
        auto, newton_schulz(X, JORDAN, dtype=torch.float64, form="gram"), atol=0, rtol=0
    )
    torch.testing.assert_close(
        auto, newton_schulz(X, JORDAN, dtype=torch.float64, form="direct"), atol=1e-10, rtol=0
    )


def test_fp32_gram_form_is_less_accurate_on_ill_conditioned_input():
    """Why fp32 keeps the direct form: the Gram form's error grows with the condition number."""
    torch.manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(192, 64))
    V, _ = torch.linalg.qr(torch.randn(64, 64))
    X = (V * torch.logspace(0, -4, 64)) @ U.T
    exact = newton_schulz(X.double(), JORDAN, dtype=torch.float64, form="direct")
    direct = (newton_schulz(X, JORDAN, form="direct").double() - exact).abs().max()
    gram = (newton_schulz(X, JORDAN, form="gram").double() - exact).abs().max()
    assert direct < 1e-5 < gram


def test_zero_and_rank_deficient_inputs_stay_finite_in_gram_form():
    assert newton_schulz(torch.zeros(8, 32), JORDAN, form="gram").abs().max() == 0
    low_rank = torch.randn(8, 1) @ torch.randn(1, 32)
    out = newton_schulz(low_rank, JORDAN, form="gram")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), textbook(low_rank, JORDAN, 5), atol=1e-3, rtol=0)


def test_invalid_form_is_rejected():
    with pytest.raises(ValueError, match="Invalid form: 'turbo'"):
        newton_schulz(torch.randn(4, 8), JORDAN, form="turbo")
    with pytest.raises(ValueError, match="Invalid form: 'turbo'"):
        ns_form(4, 8, torch.float32, "turbo")


def test_fast_form_takes_gram_for_wide_fp32_only():
    assert ns_form(768, 3072, torch.float32, "fast") == "gram"
    assert ns_form(2304, 768, torch.float32, "fast") == "gram"
    assert ns_form(768, 768, torch.float32, "fast") == "direct"
    assert ns_form(768, 3072, torch.bfloat16, "fast") == "direct"
    assert ns_form(16, 16, torch.float32, "gram") == "gram"  # forced
    X = torch.randn(2, 16, 64)
    torch.testing.assert_close(
        newton_schulz(X, JORDAN, form="fast"), newton_schulz(X, JORDAN, form="gram"), atol=0, rtol=0
    )


@pytest.mark.parametrize("form", ["direct", "gram"])
def test_tall_input_comes_back_contiguous_in_its_own_layout(form):
    X = torch.randn(3, 40, 12, dtype=torch.float64)
    out = newton_schulz(X, JORDAN, 5, dtype=torch.float64, form=form)
    assert out.is_contiguous() and out.shape == X.shape
    for i in range(3):
        torch.testing.assert_close(out[i], textbook(X[i], JORDAN, 5), atol=1e-10, rtol=0)
