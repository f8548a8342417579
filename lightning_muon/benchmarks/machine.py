"""What the machine can do, measured in-process: matmul rate and memory bandwidth.

Benchmarks report their throughput as a fraction of these rates, measured in the same process and
the same rounds as the candidates, so a loaded or throttled machine lowers both sides alike.

* :func:`matmul_probe`: ``X Xᵀ`` for ``X ∈ R^{768×3072}`` (the Gram product of Newton–Schulz on a
  GPT-2 MLP matrix), ``2·768²·3072`` FLOPs;
* :func:`copy_probe`: ``dst.copy_(src)`` of a 64 MiB fp32 tensor, ``2·64`` MiB moved.

Example:
    >>> import torch

from .timing import timed
    >>> probe = matmul_probe(torch.device("cpu"), torch.float32, rows=64, cols=256)
    >>> seconds = probe.run()
    >>> probe.work > 0 and seconds > 0
    True
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .timing import timed


@dataclass
class Probe:
    """A timed unit of work: ``run()`` returns seconds for ``work`` FLOPs (or bytes)."""

    name: str
    unit: str
    work: float
    fn: Callable[[], Any]
    sync: Callable[[], None]
    clock: str = "wall"

    def run(self) -> float:
        """Execute once; seconds on ``clock`` (synchronised on accelerators)."""
        return timed(self.fn, self.sync, self.clock)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for ``device`` to finish queued work (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def matmul_probe(
    device: torch.device,
    dtype: torch.dtype,
    rows: int = 768,
    cols: int = 3072,
    clock: str = "wall",
) -> Probe:
    """``X Xᵀ`` with ``X`` of shape ``(rows, cols)`` in ``dtype``; work in FLOPs."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    X = torch.randn(rows, cols, generator=gen).to(device=device, dtype=dtype) / cols**0.5
    out = torch.empty(rows, rows, device=device, dtype=dtype)
    name = f"matmul_{str(dtype).removeprefix('torch.')}"
    return Probe(
        name,
        "FLOP",
        2.0 * rows * rows * cols,
        lambda: torch.mm(X, X.mT, out=out),
        synchronizer(device),
        clock,
    )


def copy_probe(device: torch.device, mebibytes: int = 64, clock: str = "wall") -> Probe:
    """``dst.copy_(src)`` of ``mebibytes`` MiB of fp32; work in bytes moved (read + write)."""
    numel = mebibytes * (1 << 20) // 4
    src = torch.ones(numel, device=device)
    dst = torch.empty_like(src)
    return Probe("copy", "B", 2.0 * numel * 4, lambda: dst.copy_(src), synchronizer(device), clock)


def cpu_flags() -> list[str]:
    """SIMD/matrix extensions that decide the fast dtype on x86 CPUs (empty where unknown)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "fma")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in wanted if flag in present]
    except OSError:
        pass
    return []


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``), or ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """Static facts about the machine and the software, for the benchmark record."""
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
