"""Assembling whole matrices from blocks on their owners, and sending back whole rows.

A bucket holds ``N`` same-layout ``m × n`` matrices; rank ``r`` holds the block ``R_r × C_r`` of each
(:mod:`~lightning_muon.distributed.block_layout`), and ``N_o`` of them are owned by rank ``o``.

* **gather** (one ``all_to_all``): every *canonical* rank (one per set of replicas) sends its block
  of each matrix to the matrix's owner, which copies the blocks into place: ``W[R_s][:, C_s] ← B_s``.
  Each element crosses the network once.
* **scatter** (one ``all_to_all``): the owner sends every rank its *whole* rows ``R_r`` (all ``n``
  columns) of the result, so ``finish`` sees whole rows and row statistics (NorMuon's per-row mean
  square) are exact; a rank holding ``|C_r| < n`` columns receives ``n/|C_r|`` times its block.
* **matrix sums** (one ``all_reduce`` of ``N`` values per statistic): an element is counted on the
  canonical rank holding it (only its own columns ``C_r``: elements of the other columns may be
  computed from state this rank does not hold), a row value (``(N, |R_r|, 1)``) on the row-canonical
  rank holding the row.

Example (a 1-rank group: the block is the whole matrix):
    >>> placed(((0, 2), (4, 5)))
    [(0, 2, 0), (4, 5, 2)]
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .block_layout import BlockLayout, Runs
from .plan import Bucket
from .transport import CommStats, Flight


def placed(runs: Runs) -> list[tuple[int, int, int]]:
    """``(start, stop, local start)`` of each run: where it sits in the rank's local block."""
    out, offset = [], 0
    for a, b in runs:
        out.append((a, b, offset))
        offset += b - a
    return out


class BlockTransport:
    """The exchange plan of one bucket of block-sharded matrices (see the module docstring).

    Args:
        bucket: the bucket; ``bucket.layout`` is a :class:`~.block_layout.BlockLayout`.
        gather_dtype: the dtype of the orthogonalizer inputs on the wire.
        scatter_dtype: the dtype of the results on the wire.
        stats: where collectives are counted.
    """

    def __init__(
        self,
        bucket: Bucket,
        gather_dtype: torch.dtype,
        scatter_dtype: torch.dtype,
        stats: CommStats,
    ) -> None:
        layout: BlockLayout = bucket.layout
        self.layout, self.stats = layout, stats
        self.gather_dtype, self.scatter_dtype = gather_dtype, scatter_dtype
        self.m, self.n = layout.matrix
        W, me = layout.world, layout.rank
        self.by_owner = [bucket.owned(o) for o in range(W)]
        self.mine = self.by_owner[me]
        self.order = torch.tensor([i for owned in self.by_owner for i in owned], dtype=torch.long)
        self.inverse = torch.argsort(self.order)
        block = [layout.nrows(r) * layout.ncols(r) * layout.canonical[r] for r in range(W)]
        self.gather_send = [len(self.by_owner[o]) * block[me] for o in range(W)]
        self.gather_recv = [len(self.mine) * block[s] for s in range(W)]
        self.scatter_send = [len(self.mine) * layout.nrows(r) * self.n for r in range(W)]
        self.scatter_recv = [len(self.by_owner[o]) * layout.nrows(me) * self.n for o in range(W)]
        self.columns = placed(layout.cols[me])
        self.whole = not layout.splits_columns

    # ----------------------------------------------------------------- gather
    def start_gather(self, X: torch.Tensor) -> Flight:
        """Send this rank's block ``X (N, |R_r|, |C_r|)`` of every matrix to its owner (canonical ranks only)."""
        dtype = self.gather_dtype
        if self.layout.canonical[self.layout.rank]:
            send = X.index_select(0, self.order.to(X.device)).to(dtype).reshape(-1)
        else:
            send = X.new_empty(0, dtype=dtype)
        recv = send.new_empty(sum(self.gather_recv))
        work = dist.all_to_all_single(
            recv, send, self.gather_recv, self.gather_send, group=self.layout.group, async_op=True
        )
        self._record("gather", self.gather_send, send.element_size())
        return Flight(work, send, recv)

    def owned(self, flight: Flight) -> torch.Tensor:
        """The whole matrices this rank orthogonalizes, ``(N_own, m, n)``."""
        recv = flight.wait()
        layout, N = self.layout, len(self.mine)
        M = recv.new_empty(N, self.m, self.n)
        if not N:
            return M
        for s, chunk in enumerate(recv.split(self.gather_recv)):
            if not chunk.numel():
                continue
            B = chunk.view(N, layout.nrows(s), layout.ncols(s))
            for ra, rb, ro in placed(layout.rows[s]):
                for ca, cb, co in placed(layout.cols[s]):
                    M[:, ra:rb, ca:cb] = B[:, ro : ro + rb - ra, co : co + cb - ca]
        return M

    # ----------------------------------------------------------------- scatter
    def start_scatter(self, O: torch.Tensor) -> Flight:
        """Send every rank its whole rows ``R_r`` of this rank's results ``O (N_own, m, n)``."""
        send = self._by_destination(O.to(self.scatter_dtype))
        recv = send.new_empty(sum(self.scatter_recv))
        work = dist.all_to_all_single(
            recv, send, self.scatter_recv, self.scatter_send, group=self.layout.group, async_op=True
        )
        self._record("scatter", self.scatter_send, send.element_size())
        return Flight(work, send, recv)

    def _by_destination(self, O: torch.Tensor) -> torch.Tensor:
        """``O (N_own, m, n)`` as one buffer: for each rank in turn, its rows ``(N_own, |R_r|, n)``."""
        out = []
        for r in range(self.layout.world):
            runs = self.layout.rows[r]
            if len(runs) == 1:
                a, b = runs[0]
                out.append(O[:, a:b].reshape(-1))
            elif runs:
                out.append(torch.cat([O[:, a:b] for a, b in runs], dim=1).reshape(-1))
        return torch.cat(out) if out else O.new_empty(0)

    def local(self, flight: Flight, dtype: torch.dtype) -> torch.Tensor:
        """This rank's whole rows of every result, in bucket order: ``(N, |R_r|, n)`` in ``dtype``."""
        recv = flight.wait()
        rows = self.layout.nrows(self.layout.rank)
        stacked = recv.view(len(self.order), rows, self.n)
        return stacked.index_select(0, self.inverse.to(recv.device)).to(dtype)

    # ----------------------------------------------------------------- columns
    def widen(self, block: torch.Tensor) -> torch.Tensor:
        """``(N, |R_r|, |C_r|)`` → ``(N, |R_r|, n)``: the block in its columns, zeros elsewhere."""
        if self.whole:
            return block
        wide = block.new_zeros(*block.shape[:-1], self.n)
        for a, b, o in self.columns:
            wide[..., a:b] = block[..., o : o + b - a]
        return wide

    def narrow(self, wide: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, |R_r|, n)`` → this rank's columns ``(N, |R_r|, |C_r|)`` (into ``out`` if given)."""
        if self.whole:
            return wide if out is None else out.copy_(wide)
        if out is None:
            return torch.cat([wide[..., a:b] for a, b, _ in self.columns], dim=-1)
        for a, b, o in self.columns:
            out[..., o : o + b - a] = wide[..., a:b]
        return out

    # ----------------------------------------------------------------- statistics
    def matrix_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of each whole matrix, each element (or row, for ``(N, |R_r|, 1)``) counted once: one ``all_reduce``."""
        layout, me = self.layout, self.layout.rank
        if x.shape[-1] == 1 and self.n > 1:  # one value per row
            counted = layout.row_canonical[me]
            total = x.sum(dim=(-2, -1), keepdim=True) if counted else x.new_zeros(x.shape[0], 1, 1)
        else:
            total = x.new_zeros(x.shape[0], 1, 1)
            if layout.canonical[me]:
                for a, b, _ in self.columns:
                    total += x[..., a:b].sum(dim=(-2, -1), keepdim=True)
        dist.all_reduce(total, group=layout.group)
        self.stats.record("all_reduce", total.numel() * total.element_size() * (layout.world - 1))
        return total

    def _record(self, kind: str, send_sizes: list[int], itemsize: int) -> None:
        me = self.layout.rank
        self.stats.record(kind, (sum(send_sizes) - send_sizes[me]) * itemsize)
