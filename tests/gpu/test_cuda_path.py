"""The CUDA path: bf16 batched Newton–Schulz, the optimizer step, compiled elementwise hooks and
the benchmark on a GPU. Skipped without CUDA (not yet run on a GPU by this project's CI)."""

import pytest
import torch

from lightning_muon.benchmarks import step_speed
from lightning_muon.core.orthogonalize import JORDAN, default_ns_dtype, newton_schulz, ns_form
from lightning_muon.optim.registry import OPTIMIZERS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _device_default_dtype(monkeypatch):
    """The GPU path runs in the device's own default (the suite pins fp32 for CPU oracles)."""
    monkeypatch.delenv("LIGHTNING_MUON_NS_DTYPE", raising=False)


def test_cuda_defaults_to_bf16_direct_form():
    assert default_ns_dtype(CUDA) == torch.bfloat16
    assert ns_form(768, 3072, torch.bfloat16) == "direct"


def test_batched_bf16_newton_schulz_matches_fp32_on_cpu():
    X = torch.randn(4, 96, 384)
    gpu = newton_schulz(X.to(CUDA), JORDAN)
    assert gpu.dtype == torch.float32 and gpu.device.type == "cuda"
    cpu = newton_schulz(X, JORDAN, dtype=torch.float32, form="direct")
    torch.testing.assert_close(gpu.cpu(), cpu, atol=0.05, rtol=0)
    for i in range(4):  # batched equals per-matrix on the GPU too
        torch.testing.assert_close(gpu[i], newton_schulz(X[i].to(CUDA), JORDAN), atol=1e-2, rtol=0)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_step_on_cuda_agrees_with_cpu(name):
    shapes = [(32, 96), (32, 96), (96, 32), (48, 48)]
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(3)]
    results = []
    for device in ("cpu", "cuda"):
        ps = [torch.nn.Parameter(w.to(device)) for w in init]
        opt = OPTIMIZERS[name]([{"params": ps, "branch": "muon"}], ns_dtype="float32")
        for step in grads:
            for p, g in zip(ps, step, strict=True):
                p.grad = g.to(device)
            opt.step()
        results.append([p.detach().cpu() for p in ps])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["muon", "normuon", "adamuon"])
def test_compiled_elementwise_hooks_match_eager_on_cuda(name):
    gen = torch.Generator().manual_seed(1)
    init = [torch.randn(64, 192, generator=gen) for _ in range(3)]
    grads = [[torch.randn(64, 192, generator=gen) for _ in range(3)] for _ in range(3)]
    out = []
    for compiled in (False, True):
        ps = [torch.nn.Parameter(w.to(CUDA)) for w in init]
        opt = OPTIMIZERS[name]([{"params": ps, "branch": "muon"}], compile_elementwise=compiled)
        for step in grads:
            for p, g in zip(ps, step, strict=True):
                p.grad = g.to(CUDA)
            opt.step()
        out.append([p.detach().float().cpu() for p in ps])
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_sharded_default_transfer_is_exact_with_bf16_newton_schulz_on_cuda():
    """On CUDA the default Newton–Schulz dtype is bf16: inputs travel in fp32, results in bf16, exactly."""
    from lightning_muon.core.orthogonalizers import make_orthogonalizer

    orth = make_orthogonalizer("jordan")
    assert orth.result_dtype(torch.float32, torch.device("cuda")) == torch.bfloat16
    X = torch.randn(4, 64, 192, device=CUDA)
    O = orth(X)
    assert torch.equal(O, O.to(torch.bfloat16).float())  # the scatter in bf16 loses nothing


def test_benchmark_runs_on_cuda_and_our_step_beats_the_plain_loop():
    names = ["muon", "normuon", "torch_muon", "reference_muon", "adamw_fused", "ns"]
    result = step_speed.run(["small"], names, device="cuda", rounds=3, warmup=2, threads=None)
    s = result["sets"]["small"]
    assert result["config"]["clock"] == "wall"
    assert all(c["peak_temp_bytes"] > 0 for n, c in s["candidates"].items() if n != "adamw_fused")
    ratios = {r["pair"]: r["median"] for r in s["ratios"]}
    assert ratios["muon / reference_muon"] < 1.0
    assert ratios["normuon / muon"] < 1.5
