"""The Newton–Schulz compute dtype a device runs fastest without losing what matters.

Newton–Schulz is a handful of large matrix products; their input is normalised to ``‖X‖_F ≤ 1``
and the iteration is self-correcting, so bf16 rounding moves its error against the exact polar
factor only in the third digit, while the coefficient table moves it tenfold
(``docs/benchmarks/orthogonalizers-table.md``). So the default is the fastest matmul dtype:

* CUDA: bf16 where the device supports it natively (compute capability ≥ 8.0), else fp16;
* CPU: bf16 where a one-time micro-probe shows bf16 GEMM clearly faster than fp32 (CPUs with
  ``avx512_bf16`` or ``amx_bf16`` run it 2–4× faster; others 0.05–0.6× as fast, although
  ``torch.ops.mkldnn`` may report "bf16 supported" there), else fp32;
* anything else: fp32.

The probe times a 256×256 product in both dtypes (best of a few, about 10 ms in all), once per
process and device; on Linux x86 it runs only where ``/proc/cpuinfo`` lists a bf16 matrix flag.
``LIGHTNING_MUON_NS_DTYPE=float32`` (or ``bfloat16``, ``float16``, ``float64``) forces the choice,
e.g. for reproducible CI; ``ns_dtype=`` on an optimizer overrides both.

Example:
    >>> import torch
    >>> default_ns_dtype(torch.device("cpu")) in (torch.float32, torch.bfloat16)
    True
    >>> default_ns_dtype(torch.device("cpu")) is default_ns_dtype("cpu")  # decided once
    True
"""

from __future__ import annotations

import functools
import os
import platform
import time

import torch

#: Environment variable that forces the default Newton–Schulz dtype.
ENV_VAR = "LIGHTNING_MUON_NS_DTYPE"
#: Names accepted by ``ns_dtype`` and :data:`ENV_VAR`.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
#: bf16 is chosen on a CPU when its GEMM takes at most this fraction of fp32's time.
FAST_RATIO = 0.75
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def default_ns_dtype(device: torch.device | str) -> torch.dtype:
    """The Newton–Schulz compute dtype for ``device`` (see the module docstring)."""
    forced = os.environ.get(ENV_VAR)
    if forced:
        if forced not in DTYPES:
            raise ValueError(f"Invalid {ENV_VAR}: {forced!r}; expected one of {tuple(DTYPES)}")
        return DTYPES[forced]
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_dtype(
            device.index if device.index is not None else torch.cuda.current_device()
        )
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16_is_fast() else torch.float32
    return torch.float32


@functools.cache
def _cuda_dtype(index: int) -> torch.dtype:
    supported = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if supported else torch.float16


def cpu_bf16_flags() -> bool | None:
    """True/False if ``/proc/cpuinfo`` lists/lacks a bf16 matrix flag on x86; None if unknown."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return any(flag in text.split() for flag in _CPU_BF16_FLAGS)


@functools.cache
def cpu_bf16_is_fast() -> bool:
    """Whether this CPU's bf16 GEMM is clearly faster than fp32 (cached for the process)."""
    if cpu_bf16_flags() is False:
        return False
    return gemm_time_ratio() <= FAST_RATIO


def gemm_time_ratio(n: int = 256, repeats: int = 4) -> float:
    """Best-of-``repeats`` time of an ``n × n`` bf16 product over that of fp32, on the CPU."""
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.ones(n, n, dtype=dtype)
        out = torch.empty(n, n, dtype=dtype)
        torch.mm(a, a, out=out)  # first call: kernel selection, page faults
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, a, out=out)
            times.append(time.perf_counter() - start)
        best[dtype] = min(times)
    return best[torch.bfloat16] / max(best[torch.float32], 1e-9)
