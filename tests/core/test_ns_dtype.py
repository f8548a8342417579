"""The default Newton-Schulz dtype: forced by the environment, probed once on CPUs, by capability on CUDA."""

from pathlib import Path

import pytest
import torch

from lightning_muon import Muon
from lightning_muon.core import ns_dtype
from lightning_muon.core.orthogonalize import JORDAN, exact_polar, newton_schulz


@pytest.fixture
def unforced(monkeypatch):
    """No forcing variable and a fresh probe cache (restored afterwards)."""
    monkeypatch.delenv(ns_dtype.ENV_VAR, raising=False)
    ns_dtype.cpu_bf16_is_fast.cache_clear()
    ns_dtype._cuda_dtype.cache_clear()
    yield monkeypatch
    ns_dtype.cpu_bf16_is_fast.cache_clear()
    ns_dtype._cuda_dtype.cache_clear()


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16", "float64"])
def test_environment_forces_the_choice(monkeypatch, name):
    monkeypatch.setenv(ns_dtype.ENV_VAR, name)
    assert ns_dtype.default_ns_dtype(torch.device("cpu")) == ns_dtype.DTYPES[name]
    assert ns_dtype.default_ns_dtype(torch.device("cuda", 0)) == ns_dtype.DTYPES[name]


def test_invalid_environment_value_is_named(monkeypatch):
    monkeypatch.setenv(ns_dtype.ENV_VAR, "int8")
    with pytest.raises(ValueError, match="LIGHTNING_MUON_NS_DTYPE: 'int8'"):
        ns_dtype.default_ns_dtype("cpu")


@pytest.mark.parametrize(
    ("flags", "ratio", "expected"),
    [
        (False, 0.1, torch.float32),  # no bf16 units: fp32 without probing
        (True, 0.3, torch.bfloat16),  # bf16 units, probe 3x faster
        (True, 0.9, torch.float32),  # flags present but bf16 not clearly faster
        (None, 0.3, torch.bfloat16),  # flags unknown (not x86 Linux): the probe decides
        (None, 2.0, torch.float32),
    ],
)
def test_cpu_choice_follows_flags_and_probe(unforced, flags, ratio, expected):
    calls = []
    unforced.setattr(ns_dtype, "cpu_bf16_flags", lambda: flags)
    unforced.setattr(ns_dtype, "gemm_time_ratio", lambda: calls.append(1) or ratio)
    assert ns_dtype.default_ns_dtype("cpu") == expected
    assert ns_dtype.default_ns_dtype(torch.device("cpu")) == expected
    assert len(calls) == (0 if flags is False else 1)  # probed at most once per process


@pytest.mark.parametrize(("bf16", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_choice_follows_bf16_support(unforced, bf16, expected):
    unforced.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    assert ns_dtype.default_ns_dtype(torch.device("cuda", 0)) == expected


def test_other_devices_use_fp32(unforced):
    assert ns_dtype.default_ns_dtype(torch.device("meta")) == torch.float32


def test_probe_is_sane():
    """A positive, finite ratio (its cost, ~20 ms, is not timed here: a loaded CI machine varies)."""
    ratio = ns_dtype.gemm_time_ratio()
    assert 0 < ratio < 1000


def test_cpuinfo_flags_are_read_on_x86_linux():
    flags = ns_dtype.cpu_bf16_flags()
    assert flags in (True, False, None)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return
    if flags is not None:
        assert flags == ("avx512_bf16" in text or "amx_bf16" in text)


def test_optimizer_default_follows_the_choice_and_stays_accurate(unforced):
    """Whatever the machine picks, Muon's default runs in it, and its error against the exact
    polar factor stays within what the Jordan table itself leaves (bf16 adds ~1e-3)."""
    chosen = ns_dtype.default_ns_dtype("cpu")
    W = torch.nn.Parameter(torch.zeros(64, 192))
    opt = Muon([{"params": [W], "branch": "muon"}])
    assert opt.orthogonalizer(opt.param_groups[0]).compute_dtype(W.device) == chosen
    X = torch.randn(64, 192)
    exact = exact_polar(X.double())
    auto = (newton_schulz(X, JORDAN).double() - exact).norm() / exact.norm()
    fp32 = (newton_schulz(X, JORDAN, dtype=torch.float32).double() - exact).norm() / exact.norm()
    assert abs(auto - fp32) < 0.01, (auto, fp32)
