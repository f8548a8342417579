"""Where a matrix parameter's rows live across ranks.

A Muon-family update needs whole matrices for the orthogonalization and only rows for every
other step, so the only thing the distributed layer must know about a parameter is which ranks
hold which rows:

* **sharded** — ``Shard(0)`` on one mesh dimension (FSDP2's ``fully_shard``; the shard dimension
  of HSDP's 2-D mesh, whose other dimension is ``Replicate()``). Rank ``r`` of that dimension's
  group holds rows ``[r·c, min(m, (r+1)·c))`` with ``c = ⌈m/W⌉`` (``torch.chunk`` sizes: the last
  ranks may hold fewer rows, or none);
* **replicated** — every rank of the group holds the whole matrix (DDP's plain parameters,
  DTensors with only ``Replicate()`` placements);
* **local** — a group of one rank: no communication at all (``None`` below).

Any other placement (``Shard(1)`` from tensor or column parallelism, nested or strided sharding of
dim 0, ``Partial``) is refused here with an error naming the parameter; the distributed executor
routes those parameters to :mod:`~lightning_muon.distributed.block_layout` first, which maps every
layout of whole elements and refuses ``Partial``.

Example:
    >>> chunk_rows(5, 2), chunk_rows(1, 2), chunk_rows(8, 3)
    ([3, 2], [1, 0], [3, 3, 2])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..engine.tensors import is_dtensor, local

SHARDED = "sharded"
REPLICATED = "replicated"


def chunk_rows(m: int, world: int) -> list[int]:
    """Rows held by each of ``world`` ranks when ``m`` rows are split like ``torch.chunk`` (FSDP2, DTensor)."""
    c = math.ceil(m / world) if m else 0
    return [max(0, min(c, m - r * c)) for r in range(world)]


@dataclass(frozen=True)
class Layout:
    """The ranks that share one parameter and how.

    Attributes:
        kind: ``"sharded"`` (row blocks) or ``"replicated"`` (whole copies).
        group: the process group of the ranks that share the parameter.
        rank: this process's rank in ``group``.
        world: the size of ``group``.
        key: a hashable identity (kind and global ranks) used to bucket parameters together.
        mesh: the DTensor device mesh (``None`` for plain tensors).
        placements: the DTensor placements (``None`` for plain tensors).
    """

    kind: str
    group: Any
    rank: int
    world: int
    key: tuple
    mesh: Any = None
    placements: tuple | None = None

    @property
    def balance_key(self) -> tuple:
        """The ranks whose orthogonalizer loads are balanced together (those of ``group``)."""
        return self.key

    def rows(self, m: int) -> list[int]:
        """Rows of an ``m``-row matrix on each rank of the group."""
        return chunk_rows(m, self.world) if self.kind == SHARDED else [m] * self.world

    def offsets(self, m: int) -> list[int]:
        """First row of each rank's block."""
        rows = self.rows(m)
        return (
            [sum(rows[:r]) for r in range(self.world)] if self.kind == SHARDED else [0] * self.world
        )


def _layout(
    kind: str, group: Any, mesh: Any = None, placements: tuple | None = None
) -> Layout | None:
    world = dist.get_world_size(group)
    if world == 1:
        return None
    ranks = tuple(dist.get_process_group_ranks(group))
    return Layout(kind, group, dist.get_rank(group), world, (kind, ranks), mesh, placements)


def _dtensor_layout(name: str, p: torch.Tensor) -> Layout | None:
    from torch.distributed.tensor import Shard

    mesh, placements = p.device_mesh, tuple(p.placements)
    shard_dims = []
    for d, placement in enumerate(placements):
        if placement.is_replicate():
            continue
        if type(placement) is Shard and placement.dim == 0:
            shard_dims.append(d)
            continue
        raise ValueError(
            f"parameter {name!r} (shape {tuple(p.shape)}) has placement {placement} on mesh dimension {d} "
            f"(placements {placements}); Muon-family optimizers need whole rows on every rank and support "
            "Shard(0) on one mesh dimension (FSDP2 fully_shard, HSDP) and Replicate(). Tensor-parallel or "
            "column sharding (Shard(1)), Partial and strided sharding are not supported: leave these "
            "parameters unsharded along their last dimension, or route them to the AdamW branch "
            "(a param group with branch='adamw')."
        )
    if len(shard_dims) > 1:
        raise ValueError(
            f"parameter {name!r} is sharded along dim 0 on several mesh dimensions {shard_dims} "
            f"(placements {placements}); shard it over one data-parallel mesh dimension only"
        )
    d = shard_dims[0] if shard_dims else 0
    kind = SHARDED if shard_dims else REPLICATED
    layout = _layout(kind, mesh.get_group(d), mesh, placements)
    if layout is not None and kind == SHARDED:
        expected = layout.rows(p.shape[0])[layout.rank]
        if local(p).shape[0] != expected:
            raise ValueError(
                f"parameter {name!r}: local shard has {local(p).shape[0]} rows, expected {expected} of "
                f"{p.shape[0]} (torch.chunk sizes over {layout.world} ranks); uneven custom sharding is "
                "not supported"
            )
    return layout


def check_gradient(name: str, p: torch.Tensor) -> None:
    """Raise ``ValueError`` unless the gradient of DTensor ``p`` (if any) has ``p``'s placements."""
    grad = p.grad
    if grad is not None and (not is_dtensor(grad) or tuple(grad.placements) != tuple(p.placements)):
        placements = tuple(grad.placements) if is_dtensor(grad) else "a plain tensor"
        raise ValueError(
            f"parameter {name!r} has placements {tuple(p.placements)} but its gradient has {placements}; "
            "reduce the gradient to the parameter's placements before the optimizer step"
        )


def layout_of(name: str, p: torch.Tensor, process_group: Any = None) -> Layout | None:
    """The :class:`Layout` of a matrix parameter, or ``None`` when it lives on one rank.

    Args:
        name: the parameter's name, for error messages.
        p: the parameter (a DTensor or a plain tensor).
        process_group: the group of data-parallel replicas for plain tensors (default: the
            default group, when one is initialized).

    Raises:
        ValueError: an unsupported placement, or a gradient whose placements differ from the parameter's.
    """
    if is_dtensor(p):
        layout = _dtensor_layout(name, p)
        check_gradient(name, p)
        return layout
    if process_group is None:
        if not (dist.is_available() and dist.is_initialized()):
            return None
        process_group = dist.group.WORLD
    return _layout(REPLICATED, process_group)
