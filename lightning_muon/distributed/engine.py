"""The distributed optimizer step: owner-computes orthogonalization, overlapped with communication.

For each param group of the orthogonal branch (NorMuon paper, Algorithm 2 and §3.3):

1. every rank runs the elementwise half of the algorithm on the rows it holds
   (:meth:`~lightning_muon.optim.base.MuonFamilyOptimizer._bucket_begin`: momentum, sign,
   variance, Adam ratios — all shard-local) and starts sending its rows to each matrix's owner;
2. each owner waits for *its* matrices of one bucket, orthogonalizes them in one batched call and
   starts sending the results back — while the next bucket's gather is already in flight;
3. every rank finishes the bucket before last on its own rows
   (:meth:`~lightning_muon.optim.base.MuonFamilyOptimizer._finalize`; whole-matrix sums are
   all-reduced over the shard group, so the update equals the single-process one) and applies it.

State never leaves its shard: a sharded parameter's state is a DTensor with the parameter's
placements (``zeros_like(p)``), so distributed checkpoints save and reshard it.

Every rank issues the same collectives in the same order. Per bucket and step: 2 ``all_to_all``
(sharded) or 1 ``all_gather`` (replicated), plus one small ``all_reduce`` per whole-matrix
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

from ..core.normalize import local_matrix_sum
from ..core.orthogonalize import default_ns_dtype
from ..optim.base import NS_DTYPES, matrix_shape, state_dtype
from ..optim.validation import check_choice
from .layout import SHARDED, Layout, layout_of
from .plan import Bucket, plan_buckets
from .transport import CommStats, Flight, Transport

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
        transfer_dtype: dtype of the gathered inputs and scattered results: ``None`` (the group's
            Newton–Schulz dtype when it is below fp32 — bf16 on CUDA —, else the state dtype),
            ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"float64"``.
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
        check_choice("transfer_dtype", transfer_dtype, tuple(NS_DTYPES))
    optimizer.distributed_options = DistributedOptions(
        mode, statistics, transfer_dtype, process_group
    )
    optimizer.__dict__.pop("_distributed_engine", None)


def _named_matrix_params(optimizer: Any) -> list[tuple[str, torch.Tensor]]:
    named = []
    for group in optimizer.param_groups:
        if group["branch"] != "muon":
            continue
        names = group.get("param_names") or [optimizer._name_of(p) for p in group["params"]]
        named += [(n, p) for n, p in zip(names, group["params"], strict=True) if p.ndim >= 2]
    return named


def engine_for(optimizer: Any) -> DistributedEngine | None:
    """The engine an optimizer needs in this process, or ``None`` when it needs no communication.

    Raises:
        ValueError: unsupported placements, ``mode="local"`` with row-sharded parameters, or
            parameters that differ across ranks.
    """
    options = getattr(optimizer, "distributed_options", None) or DistributedOptions()
    if not (dist.is_available() and dist.is_initialized()):
        return None
    named = _named_matrix_params(optimizer)
    layouts = {id(p): layout_of(name, p, options.process_group) for name, p in named}
    if options.mode == "local":
        sharded = [
            n for n, p in named if layouts[id(p)] is not None and layouts[id(p)].kind == SHARDED
        ]
        if sharded:
            raise ValueError(
                f"{type(optimizer).__name__}: mode='local' cannot orthogonalize row shards ({', '.join(sharded[:3])}"
                f"{', ...' if len(sharded) > 3 else ''}); use mode='auto'"
            )
        return None
    if all(layout is None for layout in layouts.values()):
        return None
    engine = DistributedEngine(optimizer, options, layouts)
    engine.check_same_parameters()
    return engine


class DistributedEngine:
    """Runs the orthogonal branch of one optimizer across ranks (built by :func:`engine_for`).

    Attributes:
        stats: the collectives issued and bytes sent by this rank's optimizer steps.
    """

    def __init__(
        self, optimizer: Any, options: DistributedOptions, layouts: dict[int, Layout | None]
    ) -> None:
        self.optimizer = optimizer
        self.options = options
        self.layouts = layouts
        self.group = options.process_group or dist.group.WORLD
        self.world = dist.get_world_size(self.group)
        self.stats = CommStats()
        self._plans: dict[
            int, tuple[tuple, list[tuple[Bucket, Transport]], list[torch.Tensor]]
        ] = {}

    # ------------------------------------------------------------------ consistency checks
    def _device(self) -> torch.device:
        return self.optimizer.param_groups[0]["params"][0].device

    def check_same_parameters(self) -> None:
        """Raise unless every rank holds the same parameter list (same names, global shapes, branches)."""
        text = repr(
            [
                (
                    g["branch"],
                    tuple(g.get("param_names", ())),
                    [tuple(p.shape) for p in g["params"]],
                )
                for g in self.optimizer.param_groups
            ]
        )
        fingerprint = zlib.crc32(text.encode())
        both = torch.tensor([fingerprint, -fingerprint], dtype=torch.int64, device=self._device())
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.group)
        if int(both[0]) != fingerprint or int(both[1]) != -fingerprint:
            raise ValueError(
                f"{type(self.optimizer).__name__}: the ranks hold different parameters (pipeline or model "
                "parallelism without DTensors?); owner-computes orthogonalization needs data-parallel replicas "
                "or FSDP2 shards. Call lightning_muon.distributed.configure(optimizer, mode='local') to run the "
                "single-process algorithm on each rank's own parameters."
            )

    def reduce_finite(
        self, params: list[torch.Tensor], finite: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Per-parameter finiteness of ``params``' gradients on *all* ranks (one ``all_reduce``).

        Each parameter contributes ``has_grad + (W+1)·non_finite``; after the sum, ``sum mod (W+1)``
        counts the ranks holding a gradient, which must be 0 or ``W``.
        """
        opt, W = self.optimizer, self.world
        everything = [p for g in opt.param_groups for p in g["params"]]
        position = {id(p): j for j, p in enumerate(everything)}
        codes = torch.zeros(len(everything), dtype=torch.int64, device=self._device())
        index = torch.tensor(
            [position[id(p)] for p in params], dtype=torch.long, device=codes.device
        )
        if finite is not None:
            codes[index] = 1 + (W + 1) * (~finite.to(codes.device)).long()
        dist.all_reduce(codes, group=self.group)
        self.stats.record("all_reduce", codes.numel() * codes.element_size() * (W - 1))
        present = codes % (W + 1)
        partial = ((present != 0) & (present != W)).nonzero().flatten().tolist()
        if partial:
            names = ", ".join(opt._name_of(everything[j]) for j in partial[:5])
            raise RuntimeError(
                f"{type(opt).__name__}: gradients of {names} exist on some ranks only; every rank must "
                "compute the same set of gradients (set unused gradients to zeros, or to None everywhere)"
            )
        return None if finite is None else codes[index] < W + 1

    # ------------------------------------------------------------------ planning
    def transfer_dtype(self, group: dict[str, Any], p: torch.Tensor) -> torch.dtype:
        """The dtype moved over the network for this group's matrices (see :class:`DistributedOptions`)."""
        if self.options.transfer_dtype is not None:
            return NS_DTYPES[self.options.transfer_dtype]
        exact = state_dtype(p)
        # Spectral powers p != 0 and the SVD polar factor are not computed in the Newton–Schulz dtype.
        if group.get("orthogonalizer") == "svd" or group.get("power", 0.0) != 0.0:
            return exact
        ns = NS_DTYPES[group["ns_dtype"]] if group.get("ns_dtype") else default_ns_dtype(p.device)
        return ns if ns.itemsize < exact.itemsize else exact

    def plan(
        self, group: dict[str, Any]
    ) -> tuple[list[tuple[Bucket, Transport]], list[torch.Tensor]]:
        """The buckets (with their transports) of a group's matrices that have gradients, and its local-only matrices."""
        items, local_only = [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            shape = matrix_shape(p.shape)
            layout = self.layouts.get(id(p))
            if layout is None:
                local_only.append(p)
            elif shape[0] * shape[1]:
                items.append((p, shape, layout))
        dtype = self.transfer_dtype(group, items[0][0]) if items else None
        key = (tuple(id(p) for p, _, _ in items), tuple(map(id, local_only)), dtype)
        cached = self._plans.get(id(group))
        if cached is None or cached[0] != key:
            buckets = plan_buckets(items, group.get("ns_steps", 5), self.optimizer.max_bucket_numel)
            flights = [
                (b, Transport(b, dtype, self.stats, self.options.statistics)) for b in buckets
            ]
            cached = self._plans[id(group)] = (key, flights, local_only)
        return cached[1], cached[2]

    def owners(self) -> dict[str, int]:
        """Owner rank (within its shard or replica group) of every planned matrix, by parameter name."""
        out = {}
        for _, flights, _ in self._plans.values():
            for bucket, _ in flights:
                for p, owner in zip(bucket.params, bucket.owners, strict=True):
                    out[self.optimizer._name_of(p)] = owner
        return out

    # ------------------------------------------------------------------ the step
    def group_step(self, group: dict[str, Any]) -> None:
        """Update every matrix of ``group`` that has a gradient (all ranks call this together)."""
        opt = self.optimizer
        flights, local_only = self.plan(group)
        if local_only:
            for shape, plist in opt._buckets({**group, "params": local_only}):
                if shape[0] * shape[1]:
                    states = [opt._state_of(p, shape, group) for p in plist]
                    opt._apply(
                        plist,
                        opt._bucket_update(plist, states, group, shape, local_matrix_sum),
                        group,
                    )
        if not flights:
            return
        # three buckets in flight: gather(k+1) overlaps the Newton–Schulz of k, scatter(k) the next ones
        current, previous = self._begin(flights[0], group), None
        for k in range(len(flights)):
            following = self._begin(flights[k + 1], group) if k + 1 < len(flights) else None
            self._orthogonalize(current, group)
            if previous is not None:
                self._finish(previous, group)
            previous, current = current, following
        self._finish(previous, group)

    def _begin(self, flight: tuple[Bucket, Transport], group: dict[str, Any]) -> _InFlight:
        bucket, transport = flight
        opt = self.optimizer
        states = [opt._state_of(p, bucket.shape, group) for p in bucket.params]
        work = opt._bucket_begin(bucket.params, states, group)
        return _InFlight(bucket, transport, work, transport.start_gather(work.X))

    def _orthogonalize(self, job: _InFlight, group: dict[str, Any]) -> None:
        X = job.transport.owned(job.pending)
        O = self.optimizer._orthogonalize(X, group) if X.shape[0] else X
        job.pending = job.transport.start_scatter(O)

    def _finish(self, job: _InFlight, group: dict[str, Any]) -> None:
        opt, bucket, transport = self.optimizer, job.bucket, job.transport
        O = transport.local(job.pending, job.work.X.dtype)
        U = opt._bucket_finish(job.work, O, group, bucket.shape, transport.matrix_sum)
        opt._apply(bucket.params, U, group)
        if opt._capture and transport.sharded:
            _as_dtensors(opt.captured_directions, bucket)


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
        if p in captured:
            captured[p] = DTensor.from_local(
                captured[p],
                layout.mesh,
                layout.placements,
                run_check=False,
                shape=(m, n),
                stride=(n, 1),
            )


def ns_flop_shares(engine: DistributedEngine) -> dict[int, float]:
    """Fraction of the planned Newton–Schulz FLOPs each rank (of its group) computes."""
    loads: dict[int, float] = {}
    for _, flights, _ in engine._plans.values():
        for bucket, _ in flights:
            for owner in bucket.owners:
                loads[owner] = loads.get(owner, 0.0) + bucket.cost
    total = math.fsum(loads.values()) or 1.0
    return {rank: load / total for rank, load in sorted(loads.items())}
