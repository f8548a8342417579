"""Sharded and data-parallel training: owner-computes orthogonalization (NorMuon paper, Alg. 2).

Nothing to call in the common cases; every Muon-family optimizer decides at its first step:

* **FSDP2** (``fully_shard``; Lightning's and Fabric's ``ModelParallelStrategy``; HSDP's 2-D mesh):
  parameters are ``Shard(0)`` DTensors. Each matrix gets one owner rank (balanced by
  Newton–Schulz cost); the owner gathers the matrix's rows, orthogonalizes it and sends each rank
  its rows back. Elementwise steps and state stay on the shard; whole-matrix statistics are
  all-reduced, so the update is the single-process update up to float round-off.
* **DDP** (``DDPStrategy``, ``DistributedDataParallel``): parameters are plain tensors and a process
  group of more than one rank is initialized. Each rank orthogonalizes only the matrices it owns and
  the results are all-gathered: no replicated Newton–Schulz.
* one process: nothing changes.

:func:`configure` switches the behaviour (``mode="local"`` for ranks that are not replicas,
``statistics="per_shard"`` for the paper's per-shard RMS rescale, ``transfer_dtype="bfloat16"``).
FSDP1 (``FSDPStrategy``) is refused when the optimizer is built: its flattened 1-D shards hide the
matrices.

Example:
    >>> import torch.nn as nn
    >>> from lightning_muon import Muon
    >>> opt = Muon(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)))
    >>> engine_of(opt) is None  # one process: no engine, no communication
    True
"""

from __future__ import annotations

from typing import Any

from .engine import (
    MODES,
    STATISTICS,
    DistributedEngine,
    DistributedOptions,
    configure,
    executor_for,
    ns_flop_shares,
)
from .layout import Layout, chunk_rows, layout_of
from .plan import Bucket, assign_owners, ns_flops, plan_buckets
from .transport import CommStats


def engine_of(optimizer: Any) -> DistributedEngine | None:
    """The optimizer's distributed executor (resolving it now if needed), or ``None`` in one process."""
    executor = optimizer.executor()
    return executor if isinstance(executor, DistributedEngine) else None


__all__ = [
    "MODES",
    "STATISTICS",
    "Bucket",
    "CommStats",
    "DistributedEngine",
    "DistributedOptions",
    "Layout",
    "assign_owners",
    "chunk_rows",
    "configure",
    "executor_for",
    "engine_of",
    "layout_of",
    "ns_flop_shares",
    "ns_flops",
    "plan_buckets",
]
