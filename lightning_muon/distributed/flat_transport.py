"""Assembling whole matrices from FSDP1 flat slices on their owners, and sending back whole rows.

A bucket holds ``N`` same-shape ``m × n`` matrices whose elements FSDP1 split over the ranks of one
group at arbitrary offsets (:mod:`lightning_muon.distributed.flat_layout`). Rank ``r`` holds the flat
range ``[s_i, s_i + ℓ_i)`` of matrix ``i`` and *touches* the rows ``[a_i, b_i)`` that contain it.

* **block**: every rank works on a zero-padded ``(N, R, n)`` block, ``R = max_i (b_i − a_i)``: row ``j``
  of matrix ``i`` is row ``a_i + j`` of ``W_i``; only the elements of the slice are real. Elementwise
  steps run on the block and only slice elements are written back.
* **gather** (one ``all_to_all``): each rank sends the ``ℓ_i`` elements of its slice of every matrix to
  the matrix's owner, which concatenates the pieces in rank order into ``vec(W_i)``. Each element
  crosses the network once.
* **scatter** (one ``all_to_all``): the owner sends each rank the *whole* rows ``[a_i, b_i)`` of the
  result, so row statistics (NorMuon's per-row mean square) are exact on every rank. A slice that
  starts or ends mid-row costs at most ``2(n − 1)`` extra elements per matrix and rank.
* **matrix sums**: masked to the slice elements (each element counted once over the group) and
  all-reduced: one ``all_reduce`` of ``N`` values per statistic.

Example (one process stands for a 1-rank group):
    >>> from lightning_muon.distributed.flat_layout import FlatSlice
    >>> s = FlatSlice("w", (3, 4), start=2, numel=7, ranges=((0, 2), (2, 7), (9, 3)), rank=1)
    >>> t = FlatBlocks([s])
    >>> t.rows, t.offsets
    ([(0, 3)], [2])
    >>> t.to_block([torch.arange(1.0, 8.0)]).flatten().tolist()[:10]
    [0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from .flat_layout import FlatSlice
from .transport import CommStats, Flight


class FlatBlocks:
    """This rank's padded ``(N, R, n)`` block of a bucket and the maps between it and the flat slices."""

    def __init__(self, slices: list[FlatSlice]) -> None:
        self.slices = slices
        self.m, self.n = slices[0].matrix
        self.rows = [s.touched_rows() for s in slices]
        self.R = max((b - a for a, b in self.rows), default=0)
        self.offsets = [
            s.start - a * self.n if s.numel else 0
            for s, (a, _) in zip(slices, self.rows, strict=True)
        ]

    def _views(self, block: torch.Tensor) -> list[torch.Tensor]:
        flat = block.view(len(self.slices), self.R * self.n)
        return [
            flat[i, o : o + s.numel]
            for i, (o, s) in enumerate(zip(self.offsets, self.slices, strict=True))
        ]

    def to_block(
        self, values: list[torch.Tensor], dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """The slices ``values`` (1-D, this rank's elements of each matrix) in a zero block."""
        first = values[0]
        block = first.new_zeros(len(values), self.R, self.n, dtype=dtype or first.dtype)
        pairs = [(d, v) for d, v in zip(self._views(block), values, strict=True) if v.numel()]
        if pairs:
            torch._foreach_copy_([d for d, _ in pairs], [v.to(block.dtype) for _, v in pairs])
        return block

    def from_block(self, block: torch.Tensor) -> list[torch.Tensor]:
        """This rank's slice of each matrix of ``block`` (views)."""
        return self._views(block.contiguous())

    def rows_to_block(self, values: list[torch.Tensor]) -> torch.Tensor:
        """Row statistics stored expanded over the slice (one value per element) as an ``(N, R, 1)`` block."""
        block = values[0].new_zeros(len(values), self.R, 1)
        for i, (v, s, (a, b)) in enumerate(zip(values, self.slices, self.rows, strict=True)):
            if b > a:
                first = torch.arange(a, b, device=v.device) * self.n - s.start
                block[i, : b - a, 0] = v[first.clamp_(min=0)]
        return block

    def rows_from_block(self, block: torch.Tensor) -> list[torch.Tensor]:
        """Row statistics ``(N, R, 1)`` expanded back over each slice."""
        return self.from_block(block.expand(-1, -1, self.n))

    def mask(self, device: torch.device) -> torch.Tensor:
        """``True`` on the block elements this rank holds."""
        mask = torch.zeros(len(self.slices), self.R, self.n, dtype=torch.bool, device=device)
        for view in self._views(mask):
            view.fill_(True)
        return mask


class FlatTransport:
    """The exchange plan of one bucket of flat-sharded matrices (see the module docstring).

    Args:
        slices: the bucket's matrices (same shape and process group, ranges exchanged).
        owners: the owner rank (in the group) of each matrix.
        gather_dtype: the dtype of the orthogonalizer inputs on the wire.
        scatter_dtype: the dtype of the results on the wire.
        stats: where collectives are counted.
    """

    def __init__(
        self,
        slices: list[FlatSlice],
        owners: list[int],
        gather_dtype: torch.dtype,
        scatter_dtype: torch.dtype,
        stats: CommStats,
    ) -> None:
        first = slices[0]
        self.slices, self.owners, self.stats = slices, owners, stats
        self.gather_dtype, self.scatter_dtype = gather_dtype, scatter_dtype
        self.group, self.rank, self.world = first.group, first.rank, first.world
        self.blocks = FlatBlocks(slices)
        self.m, self.n = first.matrix
        W, me, n = self.world, self.rank, self.n
        self.by_owner = [[i for i, o in enumerate(owners) if o == r] for r in range(W)]
        self.mine = self.by_owner[me]
        self.order = [i for owned in self.by_owner for i in owned]

        def rows(i: int, r: int) -> int:
            a, b = slices[i].touched_rows(r)
            return b - a

        self.gather_send = [sum(slices[i].numel for i in self.by_owner[o]) for o in range(W)]
        self.gather_recv = [sum(slices[i].ranges[s][1] for i in self.mine) for s in range(W)]
        self.scatter_send = [sum(rows(i, r) * n for i in self.mine) for r in range(W)]
        self.scatter_recv = [sum(rows(i, me) * n for i in self.by_owner[o]) for o in range(W)]
        self._mask: torch.Tensor | None = None

    # ----------------------------------------------------------------- gather
    def start_gather(self, X: torch.Tensor) -> Flight:
        """Send this rank's slice of every matrix of the block ``X (N, R, n)`` to its owner."""
        views = self.blocks.from_block(X)
        pieces = [views[i] for i in self.order]
        dtype = self.gather_dtype
        send = torch.cat(pieces).to(dtype) if pieces else X.new_empty(0, dtype=dtype)
        recv = send.new_empty(sum(self.gather_recv))
        work = dist.all_to_all_single(
            recv, send, self.gather_recv, self.gather_send, group=self.group, async_op=True
        )
        self._record("gather", self.gather_send, send.element_size())
        return Flight(work, send, recv)

    def owned(self, flight: Flight) -> torch.Tensor:
        """The whole matrices this rank orthogonalizes, ``(N_own, m, n)``."""
        recv = flight.wait()
        per_source = [
            block.split([self.slices[i].ranges[s][1] for i in self.mine])
            for s, block in enumerate(recv.split(self.gather_recv))
        ]
        pieces = [per_source[s][k] for k in range(len(self.mine)) for s in range(self.world)]
        if not pieces:
            return recv.new_empty(0, self.m, self.n)
        return torch.cat(pieces).view(len(self.mine), self.m, self.n)

    # ----------------------------------------------------------------- scatter
    def start_scatter(self, O: torch.Tensor) -> Flight:
        """Send every rank the rows it touches of this rank's results ``O (N_own, m, n)``."""
        O = O.to(self.scatter_dtype).reshape(len(self.mine), self.m * self.n)
        n = self.n
        pieces = []
        for r in range(self.world):
            for k, i in enumerate(self.mine):
                a, b = self.slices[i].touched_rows(r)
                pieces.append(O[k, a * n : b * n])
        send = torch.cat(pieces) if pieces else O.new_empty(0)
        recv = send.new_empty(sum(self.scatter_recv))
        work = dist.all_to_all_single(
            recv, send, self.scatter_recv, self.scatter_send, group=self.group, async_op=True
        )
        self._record("scatter", self.scatter_send, send.element_size())
        return Flight(work, send, recv)

    def local(self, flight: Flight, dtype: torch.dtype) -> torch.Tensor:
        """This rank's padded block of the results, ``(N, R, n)`` in ``dtype`` (touched rows whole)."""
        recv = flight.wait()
        blocks = self.blocks
        out = recv.new_zeros(len(self.slices), blocks.R, self.n, dtype=dtype)
        dst, src = [], []
        for o, chunk in enumerate(recv.split(self.scatter_recv)):
            sizes = [(blocks.rows[i][1] - blocks.rows[i][0]) * self.n for i in self.by_owner[o]]
            for i, piece in zip(self.by_owner[o], chunk.split(sizes), strict=True):
                if piece.numel():
                    dst.append(out[i, : piece.numel() // self.n].view(-1))
                    src.append(piece.to(dtype))
        if dst:
            torch._foreach_copy_(dst, src)
        return out

    # ----------------------------------------------------------------- statistics
    def matrix_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of each whole matrix over its slices, ``(N, R, n) → (N, 1, 1)``: one ``all_reduce``.

        ``x`` holds one value per element, or one per row (``(N, R, 1)``, e.g. row sums of squares):
        every rank holds the touched rows whole, so a row is counted on the rank that holds its first
        element, and an element on the rank that holds it.
        """
        if self._mask is None or self._mask.device != x.device:
            self._mask = self.blocks.mask(x.device)
        mask = self._mask[..., :1] if x.shape[-1] == 1 else self._mask
        total = torch.where(mask, x, 0).sum(dim=(-2, -1), keepdim=True)
        dist.all_reduce(total, group=self.group)
        self.stats.record("all_reduce", total.numel() * total.element_size() * (self.world - 1))
        return total

    def _record(self, kind: str, send_sizes: list[int], itemsize: int) -> None:
        self.stats.record(kind, (sum(send_sizes) - send_sizes[self.rank]) * itemsize)


def describe(transport: FlatTransport) -> dict[str, Any]:
    """Element counts one step of ``transport`` moves from this rank (for tests and docs)."""
    me = transport.rank
    return {
        "gather_elements": sum(transport.gather_send) - transport.gather_send[me],
        "scatter_elements": sum(transport.scatter_send) - transport.scatter_send[me],
    }
