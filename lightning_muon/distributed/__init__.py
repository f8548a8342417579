"""Sharded and data-parallel training: owner-computes orthogonalization (NorMuon paper, Alg. 2).

Nothing to call in the common cases; every Muon-family optimizer decides at its first step:

* **FSDP2** (``fully_shard``; Lightning's and Fabric's ``ModelParallelStrategy``; HSDP's 2-D mesh):
  parameters are ``Shard(0)`` DTensors. Each matrix gets one owner rank (balanced by
  Newton–Schulz cost); the owner gathers the matrix's rows, orthogonalizes it and sends each rank
  its rows back. Elementwise steps and state stay on the shard; whole-matrix statistics are
  all-reduced, so the update is the single-process update up to float round-off.
* **tensor × data parallelism** (``parallelize_module`` then ``fully_shard`` on a 2-D mesh;
  ``Shard(1)``, ``_StridedShard(0)``, several ``Shard(0)``, replicas on any mesh dimension): each rank
  holds a block of rows × columns. The owner assembles whole matrices from the blocks and sends
  every rank its whole rows back (:mod:`~lightning_muon.distributed.block_engine`), exact as well.
* **DDP** (``DDPStrategy``, ``DistributedDataParallel``): parameters are plain tensors and a process
  group of more than one rank is initialized. Each rank orthogonalizes only the matrices it owns and
  the results are sent to every other rank: no replicated Newton–Schulz.
* **FSDP1** (``FullyShardedDataParallel(use_orig_params=True)``, Lightning's and Fabric's
  ``FSDPStrategy``, ``litgpt pretrain --devices N``): parameters are 1-D slices of flat shards; the
  optimizer reads names and shapes from FSDP's metadata and runs the same owner-computes step on
  the slices (:mod:`~lightning_muon.distributed.flat_engine`), exact like FSDP2.
* one process: nothing changes.

:func:`configure` switches the behaviour (``mode="local"`` for ranks that are not replicas,
``statistics="per_shard"`` for the paper's per-shard RMS rescale, ``transfer_dtype="bfloat16"``).

Example:
    >>> import torch.nn as nn
    >>> from lightning_muon import Muon
    >>> opt = Muon(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)))
    >>> engine_of(opt) is None  # one process: no engine, no communication
    True
"""

from __future__ import annotations

from typing import Any

from .block_engine import BlockEngine
from .block_layout import BlockLayout, block_layout_of
from .engine import (
    MODES,
    STATISTICS,
    DistributedEngine,
    DistributedOptions,
    configure,
    executor_for,
    ns_flop_shares,
)
from .flat_engine import FlatShardEngine
from .layout import Layout, chunk_rows, layout_of
from .plan import Bucket, assign_owners, ns_flops, plan_buckets
from .transport import CommStats


def engine_of(optimizer: Any) -> DistributedEngine | FlatShardEngine | None:
    """The optimizer's distributed executor (resolving it now if needed), or ``None`` in one process."""
    executor = optimizer.executor()
    return executor if isinstance(executor, DistributedEngine | FlatShardEngine) else None


__all__ = [
    "MODES",
    "STATISTICS",
    "BlockEngine",
    "BlockLayout",
    "Bucket",
    "CommStats",
    "DistributedEngine",
    "DistributedOptions",
    "FlatShardEngine",
    "Layout",
    "assign_owners",
    "block_layout_of",
    "chunk_rows",
    "configure",
    "executor_for",
    "engine_of",
    "layout_of",
    "ns_flop_shares",
    "ns_flops",
    "plan_buckets",
]
