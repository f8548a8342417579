"""Which rows and columns of a matrix each rank holds, for DTensors on any device mesh.

Tensor parallelism and FSDP2 over it (``parallelize_module`` then ``fully_shard``) leave each rank
an arbitrary block of a matrix: colwise layers are ``Shard(0)`` over the tensor-parallel dimension
and ``_StridedShard(0, split_factor=T)`` over the data-parallel one (non-contiguous rows), rowwise
layers ``Shard(1)`` over the tensor-parallel dimension. Whatever the placements, rank ``r`` holds
a *product set*: the rows ``R_r`` and the columns ``C_r`` of the matrix view ``(m, n)``,

.. math::  \\mathrm{local}_r = W[R_r][:, C_r],

because each placement splits one tensor dimension independently, left to right over the mesh
dimensions (``Shard``: ``torch.chunk``; ``_StridedShard(d, sf)``: ``sf`` chunks, each chunked again,
piece ``i`` of every chunk concatenated). A mesh dimension that does not shard a tensor dimension
replicates over it. So two ranks hold the same block or disjoint blocks, and

* the **canonical** ranks (coordinate 0 on every replicating mesh dimension) hold every element
  exactly once;
* the **row-canonical** ranks (coordinate 0 on every mesh dimension that does not split dim 0)
  hold every row exactly once.

Index sets are kept as sorted runs ``(start, stop)`` (one per contiguous piece: a ``Shard`` gives one,
a ``_StridedShard`` at most ``sf``), so nothing of a matrix's size is stored. ``Partial`` placements,
sharding of a tensor dimension beyond the first two, meshes that do not span the default group, and
local shapes that contradict the placements are refused with an error naming the parameter.

Example (a plain 2×2 grid stands for the mesh):
    >>> runs_of(torch.tensor([0, 1, 2, 5, 6, 9]))
    ((0, 3), (5, 7), (9, 10))
    >>> split_index(torch.arange(6), 2, strided=2)  # _StridedShard(0, sf=2) over 2 ranks
    [tensor([0, 1, 3, 4]), tensor([2, 5])]
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

from ..engine.tensors import local
from .layout import check_gradient

Runs = tuple[tuple[int, int], ...]


def runs_of(index: torch.Tensor) -> Runs:
    """Sorted indices as maximal runs ``(start, stop)`` of consecutive values."""
    if index.numel() == 0:
        return ()
    values = index.tolist()
    runs, start = [], values[0]
    for previous, value in zip(values, values[1:], strict=False):
        if value != previous + 1:
            runs.append((start, previous + 1))
            start = value
    runs.append((start, values[-1] + 1))
    return tuple(runs)


def _chunks(index: torch.Tensor, parts: int) -> list[torch.Tensor]:
    pieces = list(torch.chunk(index, parts)) if index.numel() else []
    return pieces + [index[:0]] * (parts - len(pieces))


def split_index(index: torch.Tensor, parts: int, strided: int | None = None) -> list[torch.Tensor]:
    """The pieces of ``index`` each of ``parts`` ranks holds under ``Shard`` (``strided=None``) or
    ``_StridedShard(split_factor=strided)``, as DTensor splits a tensor dimension."""
    if strided is None:
        return _chunks(index, parts)
    per_chunk = [_chunks(piece, parts) for piece in _chunks(index, strided)]
    return [torch.cat([pieces[i] for pieces in per_chunk]) for i in range(parts)]


def _sharded_dim(placement: Any) -> tuple[int, int | None] | None:
    """``(tensor dim, split factor or None)`` of a sharding placement, ``None`` for ``Replicate``."""
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    if isinstance(placement, _StridedShard):
        return placement.dim, int(placement.split_factor)
    if type(placement) is Shard:
        return placement.dim, None
    if placement.is_replicate():
        return None
    raise TypeError(placement)


def needs_blocks(p: torch.Tensor) -> bool:
    """True for a DTensor whose rows are not whole on every rank, or that is sharded along dim 0
    more than once: layouts :mod:`~lightning_muon.distributed.layout` does not describe (``Partial``
    included, so that :func:`block_layout_of` refuses it by name)."""
    if not (hasattr(p, "placements") and hasattr(p, "device_mesh")):
        return False
    from torch.distributed.tensor import Shard

    placements = tuple(p.placements)
    rows = sum(type(pl) is Shard and pl.dim == 0 for pl in placements)
    others = [
        pl for pl in placements if not pl.is_replicate() and not (type(pl) is Shard and pl.dim == 0)
    ]
    return bool(others) or rows > 1


def row_placements(placements: tuple, row_dims: int = 1) -> tuple:
    """Placements of a row statistic ``(m, 1)`` of a matrix with ``placements`` (``(E, m, 1)`` of an
    expert stack, ``row_dims=2``): splits of the first ``row_dims`` dims kept, other splits
    replicated (every rank holds the statistic of its rows ``R_r``)."""
    from torch.distributed.tensor import Replicate

    out = []
    for placement in placements:
        sharded = _sharded_dim(placement)
        out.append(placement if sharded is None or sharded[0] < row_dims else Replicate())
    return tuple(out)


class HeldRuns:
    """Sizes of what each rank holds of an ``(m, n)`` matrix, from its runs of rows and columns."""

    matrix: tuple[int, int]
    rows: list[Runs]
    cols: list[Runs]
    world: int

    def nrows(self, r: int) -> int:
        """``|R_r|``."""
        return sum(b - a for a, b in self.rows[r])

    def ncols(self, r: int) -> int:
        """``|C_r|``."""
        return sum(b - a for a, b in self.cols[r])

    @property
    def splits_columns(self) -> bool:
        """Whether some rank holds fewer than all columns."""
        return any(self.ncols(r) != self.matrix[1] for r in range(self.world))


class BlockLayout(HeldRuns):
    """The blocks of one matrix layout on every rank of the default group (see the module docstring).

    Attributes:
        shape: the global tensor shape; ``matrix`` its matrix view ``(m, n)``.
        mesh, placements: the DTensor's mesh and placements.
        group, rank, world: the default process group, this rank, its size.
        rows, cols: per rank, the runs of its rows ``R_r`` and columns ``C_r``.
        canonical: per rank, whether it stands for its block (coordinate 0 on replicating mesh dims).
        row_canonical: per rank, whether it stands for its rows in row sums.
        splits: tensor dim → the mesh dims that split it, in order; coords: each rank's mesh coordinates.
        key: identifies the layout (buckets share it); ``balance_key``: the ranks owners are spread over.
    """

    def __init__(self, name: str, shape: tuple[int, ...], mesh: Any, placements: tuple) -> None:
        self.shape, self.mesh, self.placements = tuple(shape), mesh, tuple(placements)
        self.matrix = (shape[0], math.prod(shape[1:]))
        self.group = dist.group.WORLD
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        grid = mesh.mesh
        if sorted(grid.flatten().tolist()) != list(range(self.world)):
            raise ValueError(
                f"parameter {name!r} (placements {self.placements}) lives on a device mesh of ranks "
                f"{sorted(grid.flatten().tolist())}; block layouts need a mesh over all {self.world} ranks"
            )
        splits: dict[int, list[int]] = {}  # tensor dim -> mesh dims that split it, in order
        for d, placement in enumerate(self.placements):
            try:
                sharded = _sharded_dim(placement)
            except TypeError:
                raise ValueError(
                    f"parameter {name!r} (shape {self.shape}) has placement {placement} on mesh dimension {d} "
                    f"(placements {self.placements}); Muon-family optimizers orthogonalize whole matrices and "
                    "need every element held by some rank: Shard, _StridedShard and Replicate are supported, "
                    "Partial is not (reduce it first, or route the parameter to the AdamW branch)"
                ) from None
            if sharded is not None:
                if sharded[0] >= 2 and len(shape) > 2:
                    raise ValueError(
                        f"parameter {name!r} (shape {self.shape}) is sharded along tensor dimension "
                        f"{sharded[0]} (placements {self.placements}); only dims 0 and 1 may be sharded"
                    )
                splits.setdefault(sharded[0], []).append(d)
        rest = math.prod(shape[2:])
        self.rows: list[Runs] = []
        self.cols: list[Runs] = []
        self.canonical: list[bool] = []
        self.row_canonical: list[bool] = []
        dims_used = {d for dims in splits.values() for d in dims}
        self.splits = splits
        self.coords: list[list[int]] = []
        for r in range(self.world):
            coord = [int(c) for c in (grid == r).nonzero()[0]]
            self.coords.append(coord)
            index = []
            for dim in (0, 1):
                idx = torch.arange(shape[dim])
                for d in splits.get(dim, []):
                    _, factor = _sharded_dim(self.placements[d])
                    idx = split_index(idx, grid.shape[d], factor)[coord[d]]
                index.append(runs_of(idx))
            self.rows.append(index[0])
            self.cols.append(tuple((a * rest, b * rest) for a, b in index[1]))
            self.canonical.append(
                all(coord[d] == 0 for d in range(grid.ndim) if d not in dims_used)
            )
            self.row_canonical.append(
                all(coord[d] == 0 for d in range(grid.ndim) if d not in splits.get(0, []))
            )
        self.key = (
            "block",
            self.shape,
            tuple(map(repr, self.placements)),
            tuple(grid.flatten().tolist()),
        )
        self.balance_key = ("block", tuple(grid.flatten().tolist()))
        self._check_partition(name)

    def local_shape(self, r: int) -> tuple[int, ...]:
        """The local tensor shape of rank ``r``."""
        return (self.nrows(r), self.ncols(r) // max(1, math.prod(self.shape[2:])), *self.shape[2:])

    def _check_partition(self, name: str) -> None:
        held = sum(self.nrows(r) * self.ncols(r) for r in range(self.world) if self.canonical[r])
        rows = sum(self.nrows(r) for r in range(self.world) if self.row_canonical[r])
        if held != self.matrix[0] * self.matrix[1] or rows != self.matrix[0]:
            raise ValueError(
                f"parameter {name!r}: placements {self.placements} do not split its {self.matrix} matrix "
                "into disjoint blocks"
            )

    def row_zeros(
        self, dtype: torch.dtype, device: torch.device, row_dims: int = 1
    ) -> torch.Tensor:
        """A zero row statistic ``(m, 1)``: a DTensor whose local part is ``(|R_r|, 1)``; with
        ``row_dims=2`` (an expert stack ``(E, m, …)``) ``(E, m, 1)``, split like dims 0 and 1."""
        from torch.distributed.tensor import DTensor

        if row_dims == 1:
            shape, local_shape = (self.matrix[0], 1), (self.nrows(self.rank), 1)
        else:
            shape, local_shape = (*self.shape[:2], 1), (*self.local_shape(self.rank)[:2], 1)
        zeros = torch.zeros(local_shape, dtype=dtype, device=device)
        stride = torch.empty(shape, device="meta").stride()
        return DTensor.from_local(
            zeros, self.mesh, row_placements(self.placements, row_dims), run_check=False,
            shape=shape, stride=stride,
        )  # fmt: skip

    def whole_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's whole rows ``(|R_r|, n)`` of a matrix as an ``(m, n)`` DTensor."""
        from torch.distributed.tensor import DTensor

        m, n = self.matrix
        return DTensor.from_local(
            rows,
            self.mesh,
            row_placements(self.placements),
            run_check=False,
            shape=(m, n),
            stride=(n, 1),
        )


_CACHE: dict[tuple, BlockLayout] = {}


def block_layout_of(name: str, p: torch.Tensor) -> BlockLayout:
    """The :class:`BlockLayout` of a DTensor matrix parameter (cached per mesh, placements and shape).

    Raises:
        ValueError: a placement it cannot map (``Partial``), a local shape that contradicts the
            placements (custom uneven shards), or a gradient with other placements.
    """
    mesh, placements = p.device_mesh, tuple(p.placements)
    key = (id(mesh), tuple(map(repr, placements)), tuple(p.shape), dist.get_world_size())
    layout = _CACHE.get(key)
    if layout is None or layout.mesh is not mesh:
        layout = _CACHE[key] = BlockLayout(name, tuple(p.shape), mesh, placements)
    expected = layout.local_shape(layout.rank)
    if tuple(local(p).shape) != expected:
        raise ValueError(
            f"parameter {name!r}: local shard has shape {tuple(local(p).shape)}, expected {expected} of "
            f"{tuple(p.shape)} under placements {placements}; uneven custom sharding is not supported"
        )
    check_gradient(name, p)
    return layout
