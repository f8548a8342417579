"""Moving orthogonalizer inputs to their owner ranks and the results back, asynchronously.

Per bucket of ``N`` same-shape ``m × n`` matrices, with ``N_o`` of them owned by rank ``o``:

* **sharded** (rank ``r`` holds ``m_r`` rows of each): one ``all_to_all`` *gathers* — rank ``r``
  sends the rows it holds of owner ``o``'s matrices to ``o``, which stacks the blocks into whole
  matrices ``(N_o, m, n)`` — and one ``all_to_all`` *scatters* the results back, each rank receiving
  exactly its rows ``(N, m_r, n)``. Each element crosses the network once each way, so the bytes
  per parameter per step are ``(W−1)/W`` elements each way (2 B each with bf16 transfers);
* **replicated** (every rank holds the whole matrix, DDP): no gather is needed; one
  ``all_to_all`` sends each owner's results to every other rank (``N_o`` matrices from owner
  ``o``, unpadded: the bytes are owner-computes' minimum, ``(W−1)·N·m·n`` over the ranks).

Every collective is started with ``async_op=True`` so the engine can overlap it with the
Newton–Schulz of another bucket. Statistics over a whole matrix go through :meth:`matrix_sum`:
one ``all_reduce`` of ``N`` partial sums over the shard group (exact), or the paper's per-shard
rescale (``statistics="per_shard"``: the local sum extrapolated to the whole matrix, no communication).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.distributed as dist

from ..core.normalize import MatrixSum, local_matrix_sum
from ..core.orthogonalizers import DTYPES
from ..engine.tensors import state_dtype
from .layout import SHARDED
from .plan import Bucket


def transfer_dtypes(
    chosen: str | None, p: torch.Tensor, orth: Any
) -> tuple[torch.dtype, torch.dtype]:
    """(gather, scatter) dtypes on the wire: ``chosen`` both ways, or exact: inputs in the state
    dtype of ``p``, results in ``orth.result_dtype`` (the narrowest dtype that holds them exactly)."""
    if chosen is not None:
        return DTYPES[chosen], DTYPES[chosen]
    exact = state_dtype(p)
    return exact, orth.result_dtype(exact, p.device)


class CommStats:
    """What this rank's optimizer steps communicated: collective calls and bytes sent to other ranks, by kind.

    Kinds: ``"gather"`` and ``"scatter"`` (one ``all_to_all`` each), ``"share"`` (replicated
    results, one ``all_to_all``) and ``"all_reduce"`` (matrix sums and gradient flags). ``orthogonalized`` counts the
    matrices this rank orthogonalized for the shared (sharded or replicated) matrices.

    Example:
        >>> stats = CommStats()
        >>> stats.record("all_reduce", 16)
        >>> stats.collectives, stats.bytes_sent
        (1, 16)
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.orthogonalized = 0

    def record(self, kind: str, nbytes: int) -> None:
        """Count one collective of ``kind`` that sends ``nbytes`` to other ranks."""
        self.calls[kind] += 1
        self.bytes[kind] += int(nbytes)

    @property
    def bytes_sent(self) -> int:
        """Bytes sent to other ranks, all kinds together."""
        return sum(self.bytes.values())

    @property
    def collectives(self) -> int:
        """Number of collectives recorded."""
        return sum(self.calls.values())

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self.calls.clear()
        self.bytes.clear()
        self.orthogonalized = 0


class Flight:
    """An asynchronous transfer: the work handle and the buffers it reads and writes."""

    __slots__ = ("work", "send", "recv")

    def __init__(self, work: Any, send: torch.Tensor, recv: torch.Tensor) -> None:
        self.work, self.send, self.recv = work, send, recv

    def wait(self) -> torch.Tensor:
        """Block until the transfer is done; return the received buffer."""
        if self.work is not None:
            self.work.wait()
        self.send = None  # the send buffer may be freed now
        return self.recv


class Transport:
    """The exchange plan of one bucket (``bucket.layout`` decides sharded or replicated).

    Args:
        bucket: the bucket (global shape, layout, owners).
        gather_dtype: the dtype of the orthogonalizer inputs sent to the owners.
        scatter_dtype: the dtype of the results sent back.
        stats: where collectives are counted.
        statistics: ``"exact"`` (all-reduced matrix sums) or ``"per_shard"`` (the paper's Alg. 2).
    """

    def __init__(
        self,
        bucket: Bucket,
        gather_dtype: torch.dtype,
        scatter_dtype: torch.dtype,
        stats: CommStats,
        statistics: str = "exact",
    ) -> None:
        layout = bucket.layout
        self.layout, self.stats, self.statistics = layout, stats, statistics
        self.gather_dtype, self.scatter_dtype = gather_dtype, scatter_dtype
        self.shape = bucket.shape
        m, n = bucket.shape
        self.sharded = layout.kind == SHARDED
        self.rows = layout.rows(m)
        self.offsets = layout.offsets(m)
        self.by_owner = [bucket.owned(o) for o in range(layout.world)]
        self.mine = self.by_owner[layout.rank]
        order = [i for owned in self.by_owner for i in owned]
        self.order = torch.tensor(order, dtype=torch.long)
        self.inverse = torch.argsort(self.order)
        me, W = layout.rank, layout.world
        # elements rank `me` sends to / receives from each rank in the gather; the scatter is its mirror
        self.gather_send = [len(self.by_owner[o]) * self.rows[me] * n for o in range(W)]
        self.gather_recv = [len(self.mine) * self.rows[s] * n for s in range(W)]
        # replicated: every rank receives each owner's N_o results whole
        self.shared_send = [len(self.mine) * m * n] * W
        self.shared_recv = [len(owned) * m * n for owned in self.by_owner]

    # ----------------------------------------------------------------- gather
    def start_gather(self, X: torch.Tensor) -> Flight:
        """Send this rank's rows of every matrix to its owner. ``X``: ``(N, m_r, n)``."""
        if not self.sharded:
            return Flight(None, X, X)
        send = X.index_select(0, self.order.to(X.device)).to(self.gather_dtype).reshape(-1)
        recv = send.new_empty(sum(self.gather_recv))
        work = dist.all_to_all_single(
            recv, send, self.gather_recv, self.gather_send, group=self.layout.group, async_op=True
        )
        self._record("gather", self.gather_send, send.element_size())
        return Flight(work, send, recv)

    def owned(self, flight: Flight) -> torch.Tensor:
        """The whole matrices this rank orthogonalizes, ``(N_own, m, n)``."""
        recv = flight.wait()
        if not self.sharded:
            return recv.index_select(0, self._on(recv.device, "mine"))
        N, n = len(self.mine), self.shape[1]
        blocks = recv.split(self.gather_recv)
        return torch.cat([b.view(N, r, n) for b, r in zip(blocks, self.rows, strict=True)], dim=1)

    # ----------------------------------------------------------------- scatter
    def start_scatter(self, O: torch.Tensor) -> Flight:
        """Send the rows of this rank's results to the ranks that hold them. ``O``: ``(N_own, m, n)``."""
        O = O.to(self.scatter_dtype)
        m, n = self.shape
        if not self.sharded:  # the same results to every rank (its own copy stays local)
            send = O.reshape(1, -1).expand(self.layout.world, -1).reshape(-1)
            recv = send.new_empty(sum(self.shared_recv))
            work = dist.all_to_all_single(
                recv, send, self.shared_recv, self.shared_send, group=self.layout.group,
                async_op=True,
            )  # fmt: skip
            self._record("share", self.shared_send, send.element_size())
            return Flight(work, send, recv)
        send = torch.cat(
            [
                O[:, start : start + r].reshape(-1)
                for start, r in zip(self.offsets, self.rows, strict=True)
            ]
        )
        recv = send.new_empty(sum(self.gather_send))
        work = dist.all_to_all_single(
            recv, send, self.gather_send, self.gather_recv, group=self.layout.group, async_op=True
        )
        self._record("scatter", self.gather_recv, send.element_size())
        return Flight(work, send, recv)

    def local(self, flight: Flight, dtype: torch.dtype) -> torch.Tensor:
        """This rank's rows of every result, in bucket order: ``(N, m_r, n)`` in ``dtype``."""
        recv = flight.wait()
        m, n = self.shape
        if self.sharded:
            stacked = recv.view(len(self.order), self.rows[self.layout.rank], n)
        else:  # owner by owner, as in `order`
            stacked = recv.view(len(self.order), m, n)
        return stacked.index_select(0, self._on(recv.device, "inverse")).to(dtype)

    def _on(self, device: torch.device, name: str) -> torch.Tensor:
        """A plan index on ``device``, built once (no host-built tensor per step)."""
        cache = self.__dict__.setdefault("_indices", {})
        if (name, device) not in cache:
            value = getattr(self, name)
            cache[(name, device)] = torch.as_tensor(value, dtype=torch.long).to(device)
        return cache[(name, device)]

    # ----------------------------------------------------------------- statistics
    @property
    def matrix_sum(self) -> MatrixSum:
        """Sum of each whole matrix from this rank's rows: ``(N, m_r, n) → (N, 1, 1)``."""
        if not self.sharded:
            return local_matrix_sum
        if self.statistics == "per_shard":
            m, local_rows = self.shape[0], self.rows[self.layout.rank]
            return lambda x: local_matrix_sum(x) * (m / max(1, local_rows))
        return self._all_reduced_sum

    def _all_reduced_sum(self, x: torch.Tensor) -> torch.Tensor:
        total = local_matrix_sum(x)
        dist.all_reduce(total, group=self.layout.group)
        self.stats.record(
            "all_reduce", total.numel() * total.element_size() * (self.layout.world - 1)
        )
        return total

    def _record(self, kind: str, send_sizes: list[int], itemsize: int) -> None:
        me = self.layout.rank
        self.stats.record(kind, (sum(send_sizes) - send_sizes[me]) * itemsize)
