"""A steady-state step allocates at most twice its largest bucket; Newton-Schulz scratch persists
but never leaks into results; the input normalisation cannot overflow (finite inputs up to fp32 max)."""

import pytest
import torch

from lightning_muon.benchmarks.memory import peak_temporary_bytes
from lightning_muon.core.orthogonalize import JORDAN, exact_polar, newton_schulz
from lightning_muon.core.workspace import Workspace
from lightning_muon.optim.registry import OPTIMIZERS

CPU = torch.device("cpu")
# one bucket per shape; small enough that a CPU without fast bf16 runs the bf16 cases in ~1 s
SHAPES = [(128, 384)] * 4 + [(384, 128)] * 2 + [(128, 128)] * 3


def _steady_optimizer(name, **kwargs):
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen)
    opt = OPTIMIZERS[name]([{"params": ps, "branch": "muon"}], **kwargs)
    for _ in range(2):  # state and workspaces exist from here on
        opt.step()
    return opt


@pytest.mark.parametrize("name", ["muon", "normuon", "adamuon"])
@pytest.mark.parametrize("ns_dtype", ["float32", "bfloat16"])
def test_steady_state_temporaries_at_most_two_buckets(name, ns_dtype):
    opt = _steady_optimizer(name, ns_dtype=ns_dtype)
    largest_bucket = 4 * 128 * 384 * 4  # fp32 bytes of the four 128x384 matrices
    peak = peak_temporary_bytes(opt.step, CPU)
    assert peak <= 2 * largest_bucket + (64 << 10), (name, ns_dtype, peak / largest_bucket)


def test_muon_keller_step_keeps_one_bucket_of_temporaries():
    """The static shape scale is folded into the update: only Newton-Schulz's result is fresh."""
    opt = _steady_optimizer("muon", ns_dtype="bfloat16")
    peak = peak_temporary_bytes(opt.step, CPU)
    assert peak <= 1.1 * 4 * 128 * 384 * 4


def test_results_are_fresh_and_scratch_is_reused():
    ws = Workspace()
    X, Y = torch.randn(3, 64, 192), torch.randn(3, 64, 192)
    first = newton_schulz(X, JORDAN, workspace=ws)
    kept = first.clone()
    held = ws.nbytes()
    second = newton_schulz(Y, JORDAN, workspace=ws)
    assert ws.nbytes() == held  # the same shapes reuse the buffers
    assert torch.equal(first, kept)  # a later call never writes into an earlier result
    assert first.data_ptr() != second.data_ptr()
    tall = newton_schulz(X.mT.contiguous(), JORDAN, workspace=ws)
    torch.testing.assert_close(tall, first.mT, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("magnitude", [1e20, 3.4028234e38])
def test_normalisation_is_overflow_safe(dtype, magnitude):
    X = torch.randn(2, 32, 96, dtype=torch.float64)
    scaled = (X / X.abs().amax() * magnitude).float()
    assert torch.isfinite(scaled).all()
    out = newton_schulz(scaled, JORDAN, dtype=dtype)
    reference = newton_schulz(X.float(), JORDAN, dtype=dtype)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        out, reference, atol=2e-2 if dtype == torch.bfloat16 else 1e-4, rtol=0
    )
    error = (out.double() - exact_polar(X)).norm() / exact_polar(X).norm()
    assert error < 0.3  # Jordan's quintic leaves ~0.2 on Gaussian input
