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

Per bucket and step: 2 ``all_to_all`` plus one ``all_reduce`` per whole-matrix statistic (0–2).
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.buckets import BucketWork, apply_update, begin_bucket, store_bucket
from ..engine.local import MatrixGroup
from ..engine.step import MatrixContext
from ..engine.tensors import matrix_shape, state_dtype, state_zeros
from .block_layout import BlockLayout
from .block_transport import BlockTransport
from .pipeline import pipelined
from .plan import Bucket, plan_buckets
from .transport import CommStats, Flight, transfer_dtypes

#: kinds of state a matrix step keeps: shaped like the parameter, one value per row, a scalar
FULL, ROW, SCALAR = "full", "row", "scalar"


def state_kinds(step: Any, p: torch.Tensor) -> dict[str, str]:
    """The kind of every state tensor ``step`` creates for ``p`` (read from its global shapes)."""
    meta = torch.empty(tuple(p.shape), dtype=p.dtype, device="meta")
    m = p.shape[0]
    kinds = {}
    for key, value in step.init_state(meta).items():
        if tuple(value.shape) == tuple(p.shape):
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
        self._plans: dict[int, tuple[tuple, list[tuple[Bucket, BlockTransport]]]] = {}

    def plan(self, group: MatrixGroup) -> list[tuple[Bucket, BlockTransport]]:
        """The buckets (with their transports) of the group's block-laid-out matrices that have gradients."""
        items = [
            (p, matrix_shape(p.shape), self.layouts[id(p)])
            for p in group.params
            if id(p) in self.layouts and p.grad is not None
        ]
        items = [item for item in items if item[1][0] * item[1][1]]
        orth = group.step.orthogonalizer
        dtypes = transfer_dtypes(self.transfer_dtype, items[0][0], orth) if items else None
        key = (tuple(id(p) for p, _, _ in items), dtypes, orth, group.max_bucket_numel)
        cached = self._plans.get(group.key)
        if cached is None or cached[0] != key:
            device = items[0][0].device if items else None
            buckets = plan_buckets(
                items, lambda m, n: orth.flops(m, n, device), group.max_bucket_numel
            )
            flights = [(b, BlockTransport(b, *dtypes, self.stats)) for b in buckets]
            cached = self._plans[group.key] = (key, flights)
        return cached[1]

    def owners(self, names: dict[int, str]) -> dict[str, int]:
        """Owner rank of every planned matrix, by parameter name."""
        return {
            names.get(id(p), "?"): owner
            for _, flights in self._plans.values()
            for bucket, _ in flights
            for p, owner in zip(bucket.params, bucket.owners, strict=True)
        }

    def run(self, group: MatrixGroup) -> None:
        """Update every block-laid-out matrix of ``group`` that has a gradient (all ranks together)."""
        pipelined(
            self.plan(group),
            lambda flight: self._begin(flight, group),
            lambda job: self._compute(job, group),
            lambda job: self._finish(job, group),
        )

    # ------------------------------------------------------------------ the three phases
    @staticmethod
    def _states(bucket: Bucket, group: MatrixGroup, kinds: dict[str, str]) -> list[dict[str, Any]]:
        """The state of each matrix, created on first use with the parameter's placements."""
        states = []
        for p in bucket.params:
            state = group.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                template = group.step.init_state(torch.zeros(1, 1, dtype=p.dtype, device=p.device))
                for key, kind in kinds.items():
                    if kind == FULL:
                        state[key] = state_zeros(p)
                    elif kind == ROW:
                        state[key] = bucket.layout.row_zeros(state_dtype(p), p.device)
                    else:
                        state[key] = template[key].clone()
            states.append(state)
        return states

    def _begin(self, flight: tuple[Bucket, BlockTransport], group: MatrixGroup) -> _BlockJob:
        bucket, transport = flight
        kinds = state_kinds(group.step, bucket.params[0])
        states = self._states(bucket, group, kinds)
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
            for p, rows in zip(bucket.params, O.unbind(0), strict=True):
                if id(p) in group.capture.ids:
                    direction = rows.detach().float().clone()
                    group.capture.directions[p] = bucket.layout.whole_rows(direction)
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
