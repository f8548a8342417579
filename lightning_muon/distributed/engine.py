"""The distributed optimizer step: owner-computes orthogonalization, overlapped with communication.

For each param group of the orthogonal branch (NorMuon paper, Algorithm 2 and §3.3):

1. every rank runs the elementwise half of the algorithm on the rows it holds
   (:meth:`~lightning_muon.engine.step.MatrixStep.begin`: momentum, sign, variance, Adam
   ratios — all shard-local) and starts sending its rows to each matrix's owner;
2. each owner waits for *its* matrices of one bucket, orthogonalizes them in one batched call and
   starts sending the results back — while the next bucket's gather is already in flight;
3. every rank finishes the bucket before last on its own rows
   (:meth:`~lightning_muon.engine.step.MatrixStep.finish`; whole-matrix sums are all-reduced
   over the shard group, so the update equals the single-process one) and applies it.

State never leaves its shard: a sharded parameter's state is a DTensor with the parameter's
placements (``zeros_like(p)``), so distributed checkpoints save and reshard it.

Parameters whose ranks hold blocks of rows × columns (tensor parallelism) are handed to a
:class:`~lightning_muon.distributed.block_engine.BlockEngine` after the row-sharded buckets.

Every rank issues the same collectives in the same order. Per bucket and step: 2 ``all_to_all``
(sharded) or 1 (replicated: the results shared), plus one small ``all_reduce`` per whole-matrix
statistic the algorithm uses (0–2); per step, one ``all_reduce`` of gradient flags (non-finite
values and gradients present on some ranks only, so every rank skips or raises together).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..core.orthogonalizers import DTYPES
from ..core.validation import check_choice
from ..engine.buckets import apply_update, begin_bucket, bucket_states, finish_bucket
from ..engine.local import LocalExecutor, MatrixGroup
from ..engine.step import MatrixContext
from ..engine.tensors import matrix_shape
from .block_engine import BlockEngine
from .block_layout import BlockLayout, block_layout_of, needs_blocks
from .flags import GradientFlags
from .layout import SHARDED, Layout, layout_of
from .pipeline import pipelined
from .plan import Bucket, plan_buckets
from .transport import CommStats, Flight, Transport, transfer_dtypes

MODES = ("auto", "local")
STATISTICS = ("exact", "per_shard")


@dataclass(frozen=True)
class DistributedOptions:
    """How an optimizer behaves across processes (set with :func:`configure`).

    Attributes:
        mode: ``"auto"``: DTensor parameters are orthogonalized by their owners; plain parameters
            under an initialized process group of more than one rank are taken as data-parallel
            replicas (DDP) and orthogonalized by their owners too. ``"local"``: no communication;
            each process runs the single-process algorithm on its own tensors (replicated
            Newton–Schulz under DDP, or independent runs); refused for row-sharded parameters.
        statistics: ``"exact"`` (whole-matrix sums all-reduced, identical to one process) or
            ``"per_shard"`` (the NorMuon paper's Algorithm 2: RMS alignment per shard, no all-reduce).
        transfer_dtype: dtype of the gathered inputs and scattered results. ``None`` (exact, the
            default): inputs travel in the state dtype and results in the narrowest dtype that
            holds them exactly (bf16 for a bf16 Newton–Schulz), so the update equals one
            process's. ``"bfloat16"``, ``"float16"``, ``"float32"``, ``"float64"``: both ways in
            that dtype (bf16 rounds the orthogonalizer input before its normalisation, for half
            the gather bytes).
        process_group: the data-parallel group of plain (replicated) parameters; default: all ranks.
    """

    mode: str = "auto"
    statistics: str = "exact"
    transfer_dtype: str | None = None
    process_group: Any = None


def configure(
    optimizer: Any,
    mode: str = "auto",
    statistics: str = "exact",
    transfer_dtype: str | None = None,
    process_group: Any = None,
) -> None:
    """Set the distributed behaviour of a Muon-family optimizer (takes effect at its next step).

    Without this call an optimizer behaves as ``mode="auto", statistics="exact"``.

    Example:
        >>> import torch.nn as nn
        >>> from lightning_muon import NorMuon
        >>> opt = NorMuon(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)))
        >>> configure(opt, statistics="per_shard", transfer_dtype="bfloat16")
        >>> opt.distributed_options.statistics
        'per_shard'
    """
    check_choice("mode", mode, MODES)
    check_choice("statistics", statistics, STATISTICS)
    if transfer_dtype is not None:
        check_choice("transfer_dtype", transfer_dtype, tuple(DTYPES))
    optimizer.distributed_options = DistributedOptions(
        mode, statistics, transfer_dtype, process_group
    )


def executor_for(
    named: list[tuple[str, torch.Tensor]],
    param_groups: list[dict[str, Any]],
    options: DistributedOptions | None = None,
    owner: str = "optimizer",
    structured: set[int] | frozenset[int] = frozenset(),
) -> DistributedEngine | None:
    """The executor the matrices ``named`` need in this process, or ``None`` when they need no communication.

    DTensors whose ranks hold blocks rather than whole rows (tensor parallelism, ``fully_shard``
    over it) go to a :class:`~lightning_muon.distributed.block_engine.BlockEngine` inside the engine.

    Args:
        named: ``(name, parameter)`` of every matrix of the orthogonal branch.
        param_groups: all param groups (every rank must hold the same ones).
        options: the distributed behaviour (default :class:`DistributedOptions`).
        owner: the optimizer's name, for error messages.
        structured: ``id`` of the DTensors updated as row blocks (``structure=``): they go to the
            block engine whatever their placements.

    Raises:
        ValueError: unsupported placements (``Partial``), ``mode="local"`` with sharded parameters,
            ``statistics="per_shard"`` with block layouts, or parameters that differ across ranks.
    """
    options = options or DistributedOptions()
    if not (dist.is_available() and dist.is_initialized()):
        return None
    blocks = {
        id(p): block_layout_of(name, p) for name, p in named if needs_blocks(p) or id(p) in structured
    }
    layouts = {
        id(p): layout_of(name, p, options.process_group) for name, p in named if id(p) not in blocks
    }
    sharded = [
        n for n, p in named if id(p) in blocks or getattr(layouts[id(p)], "kind", "") == SHARDED
    ]
    if options.mode == "local":
        if sharded:
            raise ValueError(
                f"{owner}: mode='local' cannot orthogonalize row shards ({', '.join(sharded[:3])}"
                f"{', ...' if len(sharded) > 3 else ''}); use mode='auto'"
            )
        return None
    if blocks and options.statistics != "exact":
        name = next(n for n, p in named if id(p) in blocks)
        raise ValueError(
            f"{owner}: statistics={options.statistics!r} needs row shards, but {name!r} is split into "
            "blocks (tensor parallelism, or a structure); use statistics='exact'"
        )
    if not blocks and all(layout is None for layout in layouts.values()):
        return None
    engine = DistributedEngine(param_groups, options, layouts, owner, blocks)
    engine.check_same_parameters()
    return engine


class DistributedEngine:
    """Runs the orthogonal branch across ranks (built by :func:`executor_for`).

    Attributes:
        layouts: the :class:`~lightning_muon.distributed.layout.Layout` of each matrix, by ``id``.
        stats: the collectives issued and bytes sent by this rank's optimizer steps, and the
            matrices it orthogonalized.
    """

    def __init__(
        self,
        param_groups: list[dict[str, Any]],
        options: DistributedOptions,
        layouts: dict[int, Layout | None],
        owner: str = "optimizer",
        blocks: dict[int, BlockLayout] | None = None,
    ) -> None:
        self.param_groups = param_groups
        self.options = options
        self.layouts = layouts
        self.owner = owner
        self.group = options.process_group or dist.group.WORLD
        self.world = dist.get_world_size(self.group)
        self.stats = CommStats()
        self._local = LocalExecutor()
        self.blocks = BlockEngine(blocks, options.transfer_dtype, self.stats) if blocks else None
        self._plans: dict[
            int, tuple[tuple, list[tuple[Bucket, Transport]], list[torch.Tensor]]
        ] = {}

    # ------------------------------------------------------------------ consistency checks
    def _device(self) -> torch.device:
        return self.param_groups[0]["params"][0].device

    def _names(self) -> dict[int, str]:
        names = {}
        for g in self.param_groups:
            labels = g.get("param_names") or [
                f"<parameter of shape {tuple(p.shape)}>" for p in g["params"]
            ]
            names.update({id(p): n for n, p in zip(labels, g["params"], strict=True)})
        return names

    def check_same_parameters(self) -> None:
        """Raise unless every rank holds the same parameter list (same names, global shapes, branches)."""
        text = repr(
            [
                (
                    g.get("branch"),
                    tuple(g.get("param_names", ())),
                    [tuple(p.shape) for p in g["params"]],
                )
                for g in self.param_groups
            ]
        )
        fingerprint = zlib.crc32(text.encode())
        both = torch.tensor([fingerprint, -fingerprint], dtype=torch.int64, device=self._device())
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.group)
        if int(both[0]) != fingerprint or int(both[1]) != -fingerprint:
            raise ValueError(
                f"{self.owner}: the ranks hold different parameters (pipeline or model "
                "parallelism without DTensors?); owner-computes orthogonalization needs data-parallel replicas "
                "or FSDP2 shards. Call lightning_muon.distributed.configure(optimizer, mode='local') to run the "
                "single-process algorithm on each rank's own parameters."
            )

    def reduce_gradient_flags(
        self, params: list[torch.Tensor], finite: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, bool]:
        """Finiteness of ``params``' gradients on *all* ranks, and whether any rank has a gradient.

        One ``all_reduce``, read on the host only when this rank's set of gradients changed
        (:class:`~lightning_muon.distributed.flags.GradientFlags`).
        """
        flags = self.__dict__.get("_flags")
        if flags is None:
            everything = [p for g in self.param_groups for p in g["params"]]
            names = self._names()
            flags = self._flags = GradientFlags(
                everything, [names[id(p)] for p in everything], self.group, self.owner
            )
        return flags.reduce(params, finite, self.stats)

    def explain_flags(self) -> list[str] | None:
        """Why the last flags are false: raises for gradients on some ranks only, else names the non-finite ones."""
        return self._flags.explain()

    def align_skipped_step(self, optimizer: Any) -> None:
        """Before a skipped step: plan what the other ranks plan (:meth:`GradientFlags.align_skipped_step`)."""
        self._flags.align_skipped_step(optimizer)

    # ------------------------------------------------------------------ planning
    def plan(self, group: MatrixGroup) -> tuple[list[tuple[Bucket, Transport]], list[torch.Tensor]]:
        """The buckets (with their transports) of a group's matrices that have gradients, and its local-only matrices."""
        items, local_only = [], []
        for p in group.params:
            if p.grad is None:
                continue
            shape = matrix_shape(p.shape)
            layout = self.layouts.get(id(p))
            if self.blocks is not None and id(p) in self.blocks.layouts:
                continue
            if layout is None:
                local_only.append(p)
            elif shape[0] * shape[1]:
                items.append((p, shape, layout))
        orth = group.step.orthogonalizer
        dtypes = self._transfer_dtypes(items[0][0], orth) if items else None
        key = (
            tuple(id(p) for p, _, _ in items),
            tuple(map(id, local_only)),
            dtypes,
            orth,
            group.max_bucket_numel,
        )
        cached = self._plans.get(group.key)
        if cached is None or cached[0] != key:
            device = items[0][0].device if items else self._device()
            buckets = plan_buckets(
                items, lambda m, n: orth.flops(m, n, device), group.max_bucket_numel
            )
            flights = [
                (b, Transport(b, *dtypes, self.stats, self.options.statistics)) for b in buckets
            ]
            cached = self._plans[group.key] = (key, flights, local_only)
        return cached[1], cached[2]

    def _transfer_dtypes(self, p: torch.Tensor, orth: Any) -> tuple[torch.dtype, torch.dtype]:
        """(gather, scatter) dtypes: the chosen ``transfer_dtype``, or exact (see :class:`DistributedOptions`)."""
        return transfer_dtypes(self.options.transfer_dtype, p, orth)

    def planned(self, param_group: dict[str, Any]) -> list[Bucket]:
        """The buckets planned at the last step for a param group (empty before its first step)."""
        cached = self._plans.get(id(param_group))
        return [b for b, _ in cached[1]] if cached else []

    def owners(self) -> dict[str, int]:
        """Owner rank (within its shard or replica group) of every planned matrix, by parameter name."""
        names = self._names()
        out = self.blocks.owners(names) if self.blocks is not None else {}
        for _, flights, _ in self._plans.values():
            for bucket, _ in flights:
                for p, owner in zip(bucket.params, bucket.owners, strict=True):
                    out[names.get(id(p), "?")] = owner
        return out

    # ------------------------------------------------------------------ the step
    def run(self, group: MatrixGroup) -> None:
        """Update every matrix of ``group`` that has a gradient (all ranks call this together)."""
        flights, local_only = self.plan(group)
        if local_only:
            self._local.run(group.only(local_only))
        pipelined(
            flights,
            lambda flight: self._begin(flight, group),
            lambda job: self._compute(job, group),
            lambda job: self._finish(job, group),
        )
        if self.blocks is not None:
            self.blocks.stats = self.stats
            self.blocks.run(group)

    def _begin(self, flight: tuple[Bucket, Transport], group: MatrixGroup) -> _InFlight:
        bucket, transport = flight
        states = bucket_states(bucket.params, group.step, group.state)
        work = begin_bucket(bucket.params, states, group.step, group.hooks, None, group.finite)
        return _InFlight(bucket, transport, work, transport.start_gather(work.X))

    def _compute(self, job: _InFlight, group: MatrixGroup) -> None:
        X = job.transport.owned(job.pending)
        self.stats.orthogonalized += X.shape[0]
        O = group.step.orthogonalizer(X) if X.shape[0] else X
        job.pending = job.transport.start_scatter(O)

    def _finish(self, job: _InFlight, group: MatrixGroup) -> None:
        bucket, transport = job.bucket, job.transport
        O = transport.local(job.pending, job.work.X.dtype)
        ctx = MatrixContext(bucket.shape, transport.matrix_sum)
        U, scale = finish_bucket(job.work, O, group.step, group.hooks, ctx, group.capture)
        apply_update(bucket.params, U, group.lr, group.weight_decay, scale, group.finite)
        if group.capture.ids and transport.sharded:
            _as_dtensors(group.capture.directions, bucket)


class _InFlight:
    __slots__ = ("bucket", "transport", "work", "pending")

    def __init__(self, bucket: Bucket, transport: Transport, work: Any, pending: Flight) -> None:
        self.bucket, self.transport, self.work, self.pending = bucket, transport, work, pending


def _as_dtensors(captured: dict[torch.Tensor, torch.Tensor], bucket: Bucket) -> None:
    """Wrap captured row blocks as ``(m, n)`` DTensors with the parameter's placements."""
    from torch.distributed.tensor import DTensor

    m, n = bucket.shape
    layout = bucket.layout
    for p in bucket.params:
        if p in captured and not isinstance(captured[p], DTensor):
            captured[p] = DTensor.from_local(
                captured[p],
                layout.mesh,
                layout.placements,
                run_check=False,
                shape=(m, n),
                stride=(n, 1),
            )


def ns_flop_shares(engine: DistributedEngine) -> dict[int, float]:
    """Fraction of the planned orthogonalizer FLOPs each rank (of its group) computes."""
    loads: dict[int, float] = {}
    for _, flights, _ in engine._plans.values():
        for bucket, _ in flights:
            for owner in bucket.owners:
                loads[owner] = loads.get(owner, 0.0) + bucket.cost
    total = math.fsum(loads.values()) or 1.0
    return {rank: load / total for rank, load in sorted(loads.items())}
