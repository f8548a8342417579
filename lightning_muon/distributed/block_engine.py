"""The exact owner-computes step for DTensors with any block layout (tensor × data parallelism).

For parameters whose ranks hold blocks ``W[R_r][:, C_r]`` (:mod:`~.block_layout`: ``Shard(1)``
from rowwise tensor parallelism, ``_StridedShard(0)`` from ``fully_shard`` over colwise layers,
``Shard(0)`` on several mesh dimensions, replicas on any of them), per bucket of same-layout
matrices (:mod:`~.block_transport`):

1. every rank runs ``begin`` on its block (momentum, sign, variance, Adam ratios: elementwise) and
   the canonical replica of each block sends it to the matrix's owner (owners balanced over all
   ranks by the orthogonalizer's cost, :func:`~lightning_muon.distributed.plan.plan_buckets`);
2. each owner orthogonalizes its whole matrices in one batched call and sends every rank its whole
   rows ``R_r``, while the next bucket's gather is in flight (:func:`~.pipeline.pipelined`);
3. every rank runs ``finish`` on its whole rows ``(|R_r|, n)``: elementwise state is widened to
   those rows with zeros outside ``C_r``, row state is whole, ``ctx.matrix_sum`` counts every element
   once (the canonical rank's own columns) and every row value once, all-reduced; replicas of the
   same rows compute the same finish, so row state stays identical on them. The state is narrowed
   back to ``C_r`` and the update applied to the local block only.

State lives with the parameter's placements, so distributed checkpoints save and reshard it:
elementwise state as ``zeros_like(p)``; a row statistic (``(m, 1)`` in one process, NorMuon's
second moment) as an ``(m, 1)`` DTensor split along dim 0 exactly like the parameter's rows and
replicated over the mesh dimensions that split the columns
(:func:`~.block_layout.row_placements`).

A structured parameter (``structure=``) is several matrices, one per row block
(:mod:`~.block_pieces`): blocks its ranks hold whole are updated where they are, with no
communication; the others are gathered and scattered like any block-sharded matrix. Its state
keeps the one-process shapes (a step count per block; row statistics ``(R, 1)``, or ``(E, m, 1)``
for an expert stack, split like its rows).

Per bucket and step: 2 ``all_to_all`` plus one ``all_reduce`` per whole-matrix statistic (0–2).
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.normalize import local_matrix_sum
from ..engine.blocks import Blocking, Blocks, Item, matrices, parameter_of
from ..engine.buckets import (
    BucketWork,
    apply_update,
    begin_bucket,
    chunks,
    finish_bucket,
    store_bucket,
)
from ..engine.local import MatrixGroup
from ..engine.step import Capture, MatrixContext
from ..engine.tensors import matrix_shape, state_dtype, state_zeros
from .block_layout import BlockLayout, row_placements
from .block_pieces import block_pieces
from .block_transport import BlockTransport
from .pipeline import pipelined
from .plan import Bucket, plan_buckets
from .transport import CommStats, Flight, transfer_dtypes

#: kinds of state a matrix step keeps: shaped like the parameter, one value per row, a scalar
FULL, ROW, SCALAR = "full", "row", "scalar"


def state_kinds(step: Any, p: torch.Tensor, blocking: Blocking | None = None) -> dict[str, str]:
    """The kind of every state tensor ``step`` creates for ``p`` (read from its global shapes; a
    structured parameter's from its matrix view ``(R, n)``)."""
    shape = tuple(p.shape) if blocking is None else (blocking.total_rows, blocking.columns)
    meta = torch.empty(shape, dtype=p.dtype, device="meta")
    m = shape[0]
    kinds = {}
    for key, value in step.init_state(meta).items():
        if tuple(value.shape) == shape:
            kinds[key] = FULL
        elif tuple(value.shape) == (m, 1):
            kinds[key] = ROW
        elif value.ndim == 0:
            kinds[key] = SCALAR
        else:
            raise ValueError(
                f"state {key!r} has shape {tuple(value.shape)} for a parameter of shape {tuple(p.shape)}: "
                "block layouts keep state shaped like the parameter, per row (m, 1) or scalar"
            )
    return kinds


class BlockEngine:
    """Runs the orthogonal branch for parameters with a :class:`~.block_layout.BlockLayout`.

    Attributes:
        layouts: the layout of each parameter it serves, by ``id``.
        stats: the collectives issued and bytes sent, and the matrices this rank orthogonalized.
    """

    def __init__(
        self, layouts: dict[int, BlockLayout], transfer_dtype: str | None, stats: CommStats
    ) -> None:
        self.layouts, self.transfer_dtype, self.stats = layouts, transfer_dtype, stats
        self._plans: dict[int, tuple[tuple, list[tuple[Bucket, BlockTransport]], list, list]] = {}
        self._captured: dict[torch.Tensor, tuple[torch.Tensor, int]] = {}

    def _items(
        self, group: MatrixGroup
    ) -> tuple[list[tuple], list[tuple[Item, tuple[int, int]]], list]:
        """``(param or block, shape, layout)`` of the matrices to gather, the blocks this rank
        holds whole and updates alone (:mod:`~.block_pieces`), and the blocks other ranks update
        alone (this rank only counts their steps)."""
        gathered, alone, elsewhere = [], [], []
        for p in group.params:
            if id(p) not in self.layouts or p.grad is None:
                continue
            layout, blocking = self.layouts[id(p)], group.blockings.get(p)
            if blocking is None:
                shape = matrix_shape(p.shape)
                if shape[0] * shape[1]:
                    gathered.append((p, shape, layout))
                continue
            local_blocking, pieces = block_pieces(layout, blocking)
            for b, piece in enumerate(pieces):
                item = Blocks(p, local_blocking, b, 1)
                if not piece.local:
                    gathered.append((item, piece.matrix, piece))
                elif piece.nrows(piece.rank) and piece.matrix[1]:
                    alone.append((item, piece.matrix))
                else:
                    elsewhere.append(item)
        return gathered, alone, elsewhere

    def plan(self, group: MatrixGroup) -> tuple[list[tuple[Bucket, BlockTransport]], list, list]:
        """The buckets (with their transports) of the group's block-laid-out matrices that have
        gradients, the buckets of blocks this rank updates alone, and the blocks others update
        alone."""
        gathered, alone, elsewhere = self._items(group)
        orth = group.step.orthogonalizer
        first = parameter_of(gathered[0][0]) if gathered else None
        dtypes = transfer_dtypes(self.transfer_dtype, first, orth) if gathered else None
        key = (
            tuple((id(parameter_of(i)), getattr(i, "first", -1)) for i, _, _ in gathered),
            tuple((id(i.param), i.first) for i, _ in alone),
            tuple((id(i.param), i.first) for i in elsewhere),
            dtypes,
            orth,
            group.max_bucket_numel,
        )
        cached = self._plans.get(group.key)
        if cached is None or cached[0] != key:
            device = first.device if first is not None else None
            buckets = plan_buckets(
                gathered, lambda m, n: orth.flops(m, n, device), group.max_bucket_numel
            )
            flights = [(b, BlockTransport(b, *dtypes, self.stats)) for b in buckets]
            by_shape: dict[tuple, list[Item]] = {}
            for item, shape in alone:
                by_shape.setdefault((shape, item.param.dtype), []).append(item)
            local = [
                (shape, chunk)
                for (shape, _), members in by_shape.items()
                for chunk in chunks(members, shape, group.max_bucket_numel)
            ]
            cached = self._plans[group.key] = (key, flights, local, elsewhere)
        return cached[1], cached[2], cached[3]

    def owners(self, names: dict[int, str]) -> dict[str, int]:
        """Owner rank of every planned matrix, by parameter name (``name[b]`` for block ``b``)."""
        out = {}
        for _, flights, _, _ in self._plans.values():
            for bucket, _ in flights:
                for item, owner in zip(bucket.params, bucket.owners, strict=True):
                    name = names.get(id(parameter_of(item)), "?")
                    out[f"{name}[{item.first}]" if isinstance(item, Blocks) else name] = owner
        return out

    def run(self, group: MatrixGroup) -> None:
        """Update every block-laid-out matrix of ``group`` that has a gradient (all ranks together)."""
        flights, alone, elsewhere = self.plan(group)
        for shape, items in alone:  # no communication: before the collectives
            self._update_alone(shape, items, group)
        for item, state in zip(elsewhere, self._states(elsewhere, group), strict=True):
            # a block held whole by other ranks: its step count stays equal on every rank
            counted = 1.0 if group.finite is None else group.finite.to(state["step"].dtype)
            state["step"][item.first] += counted
        pipelined(
            flights,
            lambda flight: self._begin(flight, group),
            lambda job: self._compute(job, group),
            lambda job: self._finish(job, group),
        )
        if group.capture.ids:
            self._wrap_captured(group.capture)

    # ------------------------------------------------------------------ state and captures
    def _states(self, items: list[Item], group: MatrixGroup) -> list[dict[str, Any]]:
        """The state of each matrix, created on first use with the parameter's placements."""
        states = []
        for item in items:
            p = parameter_of(item)
            state = group.state[p]
            if not state:
                blocking = group.blockings.get(p)
                layout = self.layouts[id(p)]
                count = () if blocking is None else (len(blocking.rows),)
                state["step"] = torch.zeros(count, dtype=torch.float32, device=p.device)
                template = group.step.init_state(torch.zeros(1, 1, dtype=p.dtype, device=p.device))
                row_dims = 1 if blocking is None else blocking.row_dims
                for key, kind in state_kinds(group.step, p, blocking).items():
                    if kind == FULL:
                        state[key] = state_zeros(p)
                    elif kind == ROW:
                        state[key] = layout.row_zeros(state_dtype(p), p.device, row_dims)
                    else:
                        state[key] = template[key].clone()
            states.append(state)
        return states

    def _capture(self, group: MatrixGroup, items: list[Item], O: torch.Tensor) -> None:
        """Record the requested directions: whole rows ``(|R_r|, n)`` of each matrix (fp32)."""
        for item, rows in zip(items, O.unbind(0), strict=True):
            p = parameter_of(item)
            if id(p) not in group.capture.ids:
                continue
            if not isinstance(item, Blocks):
                group.capture.directions[p] = self.layouts[id(p)].whole_rows(rows.float().clone())
                continue
            local_rows = item.blocking.rows
            whole = Blocking(local_rows, rows.shape[-1], item.blocking.row_dims)
            if p not in self._captured:
                buffer = rows.new_zeros(whole.total_rows, whole.columns, dtype=torch.float32)
                self._captured[p] = (buffer, whole.row_dims)
            matrices(Blocks(p, whole, item.first, 1), self._captured[p][0])[0].copy_(rows)

    def _wrap_captured(self, capture: Capture) -> None:
        """Captured blocks as DTensors of the matrix view (``(E, m, n')`` for an expert stack)."""
        from torch.distributed.tensor import DTensor

        for p, (rows, row_dims) in self._captured.items():
            layout = self.layouts[id(p)]
            if row_dims == 1:  # the rows of the matrix view are dim 0: (m, n)
                capture.directions[p] = layout.whole_rows(rows)
                continue
            E, m = layout.shape[:2]
            n = rows.shape[-1]
            local_shape = (*layout.local_shape(layout.rank)[:2], n)
            capture.directions[p] = DTensor.from_local(
                rows.view(local_shape), layout.mesh, row_placements(layout.placements, 2),
                run_check=False, shape=(E, m, n), stride=(m * n, n, 1),
            )  # fmt: skip
        self._captured = {}

    # ------------------------------------------------------------------ blocks held whole
    def _update_alone(self, shape: tuple[int, int], items: list[Item], group: MatrixGroup) -> None:
        """Blocks this rank holds whole: the one-process bucket step (replicas compute the same)."""
        states = self._states(items, group)
        work = begin_bucket(items, states, group.step, group.hooks, None, group.finite)
        O = group.step.orthogonalizer(work.X)
        self.stats.orthogonalized += O.shape[0]
        if group.capture.ids:
            self._capture(group, items, O)
        ctx = MatrixContext(shape, local_matrix_sum)
        U, scale = finish_bucket(work, O, group.step, group.hooks, ctx, Capture())
        apply_update(items, U, group.lr, group.weight_decay, scale, group.finite)

    # ------------------------------------------------------------------ the three phases
    def _begin(self, flight: tuple[Bucket, BlockTransport], group: MatrixGroup) -> _BlockJob:
        bucket, transport = flight
        p, blocking = parameter_of(bucket.params[0]), None
        if isinstance(bucket.params[0], Blocks):
            blocking = group.blockings.get(p)
        kinds = state_kinds(group.step, p, blocking)
        states = self._states(bucket.params, group)
        work = begin_bucket(bucket.params, states, group.step, group.hooks, None, group.finite)
        return _BlockJob(bucket, transport, work, transport.start_gather(work.X), kinds)

    def _compute(self, job: _BlockJob, group: MatrixGroup) -> None:
        X = job.transport.owned(job.pending)
        self.stats.orthogonalized += X.shape[0]
        O = group.step.orthogonalizer(X) if X.shape[0] else X
        job.pending = job.transport.start_scatter(O)

    def _finish(self, job: _BlockJob, group: MatrixGroup) -> None:
        bucket, transport, work = job.bucket, job.transport, job.work
        O = transport.local(job.pending, work.X.dtype)  # (N, |R_r|, n): whole rows
        if group.capture.ids:
            self._capture(group, bucket.params, O)
        ctx = MatrixContext(bucket.shape, transport.matrix_sum)
        factor = group.step.static_scale(ctx)
        if factor is None:
            full = [k for k in work.keys if job.kinds.get(k) == FULL]
            S = dict(work.S) | {k: transport.widen(work.S[k]) for k in full}
            U = transport.narrow(group.hooks.finish(group.step, O, S, ctx))
            for k in full:
                if S[k] is not work.S[k]:
                    transport.narrow(S[k], out=work.S[k])
        else:
            U = transport.narrow(O)
        U = store_bucket(work, U)
        apply_update(
            bucket.params,
            U,
            group.lr,
            group.weight_decay,
            1.0 if factor is None else factor,
            group.finite,
        )


class _BlockJob:
    __slots__ = ("bucket", "transport", "work", "pending", "kinds")

    def __init__(
        self,
        bucket: Bucket,
        transport: BlockTransport,
        work: BucketWork,
        pending: Flight,
        kinds: dict,
    ) -> None:
        self.bucket, self.transport, self.work, self.pending, self.kinds = (
            bucket, transport, work, pending, kinds,
        )  # fmt: skip
