"""The exact owner-computes step under FSDP1 (``FullyShardedDataParallel``, ``use_orig_params=True``).

Per param group of the orthogonal branch, with every matrix's flat slices known
(:mod:`~lightning_muon.distributed.flat_layout`) and buckets of same-shape matrices
(:mod:`~lightning_muon.distributed.flat_transport`):

1. every rank runs the elementwise half of the algorithm (momentum, sign, variance, Adam ratios)
   on its zero-padded block of touched rows, and sends the slice elements to each matrix's owner;
2. each owner orthogonalizes its whole matrices in one batched call (owners balanced by
   Newton–Schulz cost, :func:`~lightning_muon.distributed.plan.assign_owners`) and sends every rank
   the whole rows it touches, while the next bucket's gather is in flight;
3. every rank finishes on whole rows (row statistics exact), with whole-matrix sums masked to its
   slice and all-reduced, writes the new state and applies its slice of the update.

State stays on the rank's flat slice, shaped like the slice, so ``FSDP.optim_state_dict`` saves and
reshards it (full and sharded). Row statistics (state keys ``row_*``, one value per row in one
process) are stored **expanded**: every element of a row holds the row's value. That is the only
positive-dimension shape FSDP1's optimizer state dict accepts besides scalars, it reshards to any
world size like the momentum does, and all ranks touching a row compute the same value from the same
whole row; it costs one element per parameter element instead of one per row.

Per bucket and step: 2 ``all_to_all`` plus one ``all_reduce`` per whole-matrix statistic the
algorithm uses (0–2); per step, one ``all_reduce`` of gradient flags
(:mod:`~lightning_muon.distributed.flags`, read on the host only when a rank's gradients change).
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
import torch.distributed as dist

from ..engine.local import MatrixGroup
from ..engine.step import MatrixContext
from ..engine.tensors import state_dtype, state_zeros
from .engine import DistributedEngine, DistributedOptions
from .flags import GradientFlags
from .flat_layout import FlatSlice, exchange_ranges
from .flat_transport import FlatTransport
from .pipeline import pipelined
from .plan import assign_owners
from .transport import CommStats, Flight


class FlatShardEngine:
    """Runs the orthogonal branch of one optimizer whose parameters are FSDP1 flat views.

    Attributes:
        stats: the collectives issued and bytes sent by this rank's optimizer steps.
        slices: the :class:`~lightning_muon.distributed.flat_layout.FlatSlice` of every parameter, by ``id``.
    """

    def __init__(
        self,
        param_groups: list[dict[str, Any]],
        options: DistributedOptions,
        slices: dict[int, FlatSlice],
        owner: str = "optimizer",
    ) -> None:
        self.param_groups, self.options, self.owner = param_groups, options, owner
        everything = [p for g in param_groups for p in g["params"]]
        ordered = exchange_ranges([slices[id(p)] for p in everything])
        self.slices = {id(p): s for p, s in zip(everything, ordered, strict=True)}
        self.group = dist.group.WORLD
        self.world = dist.get_world_size()
        self.stats = CommStats()
        self._present: dict[int, bool] = {}
        self._plans: dict[int, tuple[tuple, list[tuple[list[torch.Tensor], FlatTransport]]]] = {}
        self._check_same_parameters(everything)

    def _device(self) -> torch.device:
        return self.param_groups[0]["params"][0].device

    def _check_same_parameters(self, everything: list[torch.Tensor]) -> None:
        text = repr([(self.slices[id(p)].name, self.slices[id(p)].shape) for p in everything])
        fingerprint = zlib.crc32(text.encode())
        both = torch.tensor([fingerprint, -fingerprint], dtype=torch.int64, device=self._device())
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        if int(both[0]) != fingerprint or int(both[1]) != -fingerprint:
            raise ValueError(
                f"{self.owner}: the ranks hold different FSDP parameters; every rank "
                "must build the optimizer from the same wrapped model"
            )

    # ------------------------------------------------------------------ gradient flags
    def reduce_gradient_flags(
        self, params: list[torch.Tensor], finite: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, bool]:
        """Finiteness of ``params``' gradients on all ranks, and whether any rank has a gradient.

        One ``all_reduce`` (:class:`~lightning_muon.distributed.flags.GradientFlags`); an empty
        slice holds no gradient, so presence is counted over the ranks holding elements.
        """
        flags = self.__dict__.get("_flags")
        if flags is None:
            everything = [p for g in self.param_groups for p in g["params"]]
            flags = self._flags = GradientFlags(
                everything,
                [self.slices[id(p)].name for p in everything],
                self.group,
                self.owner,
                [self.slices[id(p)].numel > 0 for p in everything],
            )
        result = flags.reduce(params, finite, self.stats)
        self._present = flags.present  # the verified presence: what every rank plans
        return result

    def explain_flags(self) -> list[str] | None:
        """Why the last flags are false: raises for gradients on some ranks only, else names the non-finite ones."""
        return self._flags.explain()

    def align_skipped_step(self, optimizer: Any) -> None:
        """Before a skipped step: plan what the other ranks plan (:meth:`GradientFlags.align_skipped_step`)."""
        self._flags.align_skipped_step(optimizer)

    # ------------------------------------------------------------------ planning
    def plan(self, group: MatrixGroup) -> list[tuple[list[torch.Tensor], FlatTransport]]:
        """Buckets ``(params, transport)`` of the group's matrices that have a gradient on some rank."""
        items = [p for p in group.params if self._present.get(id(p))]
        items = [p for p in items if self.slices[id(p)].matrix[0] * self.slices[id(p)].matrix[1]]
        orth = group.step.orthogonalizer
        dtypes = self._transfer_dtypes(items[0], orth) if items else None
        key = (tuple(map(id, items)), dtypes, orth, group.max_bucket_numel)
        cached = self._plans.get(group.key)
        if cached is not None and cached[0] == key:
            return cached[1]
        grouped: dict[tuple, list[torch.Tensor]] = {}
        for p in items:
            s = self.slices[id(p)]
            grouped.setdefault((s.matrix, p.dtype, id(s.group)), []).append(p)
        chunks = []
        for (shape, _, _), members in grouped.items():
            per = max(1, group.max_bucket_numel // max(1, shape[0] * shape[1]))
            chunks += [members[i : i + per] for i in range(0, len(members), per)]
        by_group: dict[int, list[tuple[int, int, float]]] = {}
        for c, chunk in enumerate(chunks):
            s = self.slices[id(chunk[0])]
            cost = float(orth.flops(*s.matrix, chunk[0].device))
            by_group.setdefault(id(s.group), []).extend((c, i, cost) for i in range(len(chunk)))
        owners = [[0] * len(chunk) for chunk in chunks]
        for members in by_group.values():
            world = self.slices[id(chunks[members[0][0]][0])].world
            ranks = assign_owners([m[2] for m in members], world)
            for (c, i, _), owner in zip(members, ranks, strict=True):
                owners[c][i] = owner
        flights = [
            (
                chunk,
                FlatTransport([self.slices[id(p)] for p in chunk], owners[c], *dtypes, self.stats),
            )
            for c, chunk in enumerate(chunks)
        ]
        self._plans[group.key] = (key, flights)
        return flights

    #: (gather, scatter) dtypes: the chosen ``transfer_dtype``, or exact — the FSDP2 executor's rule.
    _transfer_dtypes = DistributedEngine._transfer_dtypes

    def planned(self, param_group: dict[str, Any]) -> list[list[torch.Tensor]]:
        """The buckets (their parameters) planned at the last step for a param group."""
        cached = self._plans.get(id(param_group))
        return [chunk for chunk, _ in cached[1]] if cached else []

    def owners(self) -> dict[str, int]:
        """Owner rank (in its shard group) of every planned matrix, by parameter name."""
        return {
            self.slices[id(p)].name: transport.owners[i]
            for _, flights in self._plans.values()
            for chunk, transport in flights
            for i, p in enumerate(chunk)
        }

    # ------------------------------------------------------------------ the step
    def run(self, group: MatrixGroup) -> None:
        """Update every matrix of ``group`` that has a gradient on some rank (all ranks call this together)."""
        pipelined(
            self.plan(group),
            lambda flight: self._begin(flight, group),
            self._compute,
            lambda job: self._finish(job, group),
        )

    @staticmethod
    def _state_of(p: torch.Tensor, group: MatrixGroup) -> dict[str, Any]:
        """The slice-shaped state of ``p`` (row statistics expanded over the slice), created on first use."""
        state = group.state[p]
        if not state:
            template = group.step.init_state(torch.zeros(1, 1, dtype=p.dtype, device=p.device))
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            for key, value in template.items():
                state[key] = state_zeros(p) if value.ndim else value.clone()
        return state

    def _begin(
        self, flight: tuple[list[torch.Tensor], FlatTransport], group: MatrixGroup
    ) -> _FlatWork:
        plist, transport = flight
        blocks = transport.blocks
        states = [self._state_of(p, group) for p in plist]
        # 1-D slices (NO_SHARD, and a group of one rank, keep the original shape: same elements)
        grads = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(0) for p in plist]
        G = blocks.to_block(grads, state_dtype(plist[0]))
        keys = [k for k, v in states[0].items() if isinstance(v, torch.Tensor)]
        S: dict[str, torch.Tensor] = {}
        for k in keys:
            values = [s[k] if s[k].ndim == 0 else s[k].reshape(-1) for s in states]
            if values[0].ndim == 0:
                S[k] = torch.stack(values).view(-1, 1, 1)
            elif k.startswith("row_"):
                S[k] = blocks.rows_to_block(values)
            else:
                S[k] = blocks.to_block(values)
        # a finite flag (nonfinite="skip"): the state is saved, restored in _finish where it is false
        saved = None if group.finite is None else {k: v.clone() for k, v in S.items()}
        S["step"] += 1
        X = group.hooks.begin(group.step, G, S)
        return _FlatWork(
            plist, transport, states, keys, S, X, transport.start_gather(X), group.step, saved
        )

    def _compute(self, job: _FlatWork) -> None:
        X = job.transport.owned(job.pending)
        self.stats.orthogonalized += X.shape[0]
        O = job.step.orthogonalizer(X) if X.shape[0] else X
        job.pending = job.transport.start_scatter(O)

    def _finish(self, job: _FlatWork, group: MatrixGroup) -> None:
        transport, blocks = job.transport, job.transport.blocks
        O = transport.local(job.pending, job.X.dtype)
        if group.capture.ids:
            for p, view in zip(job.plist, blocks.from_block(O), strict=True):
                if id(p) in group.capture.ids:
                    group.capture.directions[p] = view.detach().float().clone()
        ctx = MatrixContext(blocks.slices[0].matrix, transport.matrix_sum)
        U = group.hooks.finish(group.step, O, job.S, ctx)
        if job.saved is not None:  # a false flag restores the state and zeroes the update
            for k, v in job.saved.items():
                torch.where(group.finite, job.S[k], v, out=job.S[k])
            U = U.masked_fill_(group.finite.logical_not(), 0.0)
        for k in job.keys:
            block = job.S[k]
            targets = [s[k] if s[k].ndim == 0 else s[k].view(-1) for s in job.states]
            if targets[0].ndim == 0:
                values = list(block.view(-1).unbind(0))
            elif k.startswith("row_"):
                values = blocks.rows_from_block(block)
            else:
                values = blocks.from_block(block)
            pairs = [(t, v) for t, v in zip(targets, values, strict=True) if t.numel()]
            if pairs:
                torch._foreach_copy_([t for t, _ in pairs], [v for _, v in pairs])
        self._apply(job.plist, blocks.from_block(U), group.lr, group.weight_decay, group.finite)

    @staticmethod
    def _apply(
        plist: list[torch.Tensor],
        updates: list[torch.Tensor],
        lr: float,
        wd: float,
        finite: torch.Tensor | None = None,
    ) -> None:
        """Decoupled weight decay, then ``W ← W − lr·U`` on each slice (``lr = 0``: untouched).

        With a ``finite`` flag the decay factor is ``1 − lr·λ·finite`` (``U`` is zeroed already)."""
        pairs = [(p, u) for p, u in zip(plist, updates, strict=True) if p.numel()]
        if lr == 0 or not pairs:
            return
        local = [p.data.view(-1) for p, _ in pairs]
        if wd and finite is not None:
            torch._foreach_mul_(local, 1.0 - (lr * wd) * finite.to(local[0].dtype))
        elif wd:
            torch._foreach_mul_(local, 1.0 - lr * wd)
        torch._foreach_add_(
            local, [u.to(w.dtype) for (_, u), w in zip(pairs, local, strict=True)], alpha=-lr
        )


class _FlatWork:
    __slots__ = ("plist", "transport", "states", "keys", "S", "X", "pending", "step", "saved")

    def __init__(self, plist, transport, states, keys, S, X, pending: Flight, step, saved) -> None:  # noqa: ANN001
        self.plist, self.transport, self.states, self.keys = plist, transport, states, keys
        self.S, self.X, self.pending, self.step, self.saved = S, X, pending, step, saved


def flat_executor_for(
    slices: dict[int, FlatSlice],
    param_groups: list[dict[str, Any]],
    options: DistributedOptions | None = None,
    owner: str = "optimizer",
) -> FlatShardEngine | None:
    """The FSDP1 executor of an optimizer built from flat views, or ``None`` without a process group.

    Raises:
        ValueError: ``mode="local"`` or ``statistics="per_shard"`` (a flat slice is not a set of rows,
            so neither has a meaning here), or parameters that differ across ranks.
    """
    options = options or DistributedOptions()
    if not (dist.is_available() and dist.is_initialized()):
        return None
    if options.mode != "auto" or options.statistics != "exact":
        raise ValueError(
            f"{owner}: FSDP1 flat shards need mode='auto' and statistics='exact' "
            f"(got mode={options.mode!r}, statistics={options.statistics!r}): a rank's slice of a matrix is not "
            "a set of whole rows; call lightning_muon.distributed.configure(optimizer) with the defaults"
        )
    return FlatShardEngine(param_groups, options, slices, owner)
