"""Where each matrix lives inside FSDP1's flat parameters (``FullyShardedDataParallel``, ``use_orig_params=True``).

FSDP1 concatenates the parameters of one wrapped module into a 1-D ``FlatParameter`` and gives rank
``r`` of its process group one contiguous chunk of it. With ``use_orig_params=True`` every original
``Parameter`` object survives, but its ``.data`` is the 1-D view of the elements of this rank's chunk
(possibly none). Read row-major, a matrix ``W ∈ R^{m×n}`` is therefore split at arbitrary element
offsets: rank ``r`` holds the flat range ``[s_r, s_r + ℓ_r)`` of ``vec(W)``, the ranges tile
``[0, mn)`` in rank order, and a boundary may fall in the middle of a row.

This module reads FSDP's metadata (``FlatParameter._params``, ``_shapes``, ``_fqns``,
``_shard_param_infos`` and the handle's process group) into one :class:`FlatSlice` per parameter and
exchanges the ranges once (one ``all_gather`` per process group), so every rank knows every rank's
range. The rows a rank *touches* — ``⌊s/n⌋ … ⌈(s+ℓ)/n⌉`` — are what it needs whole for row statistics.

Example:
    >>> s = FlatSlice("w", (4, 3), start=4, numel=5, ranges=((0, 4), (4, 5), (9, 3)))
    >>> s.touched_rows(), s.touched_rows(0), s.touched_rows(2)
    ((1, 3), (0, 2), (3, 4))
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

#: Prefixes FSDP1, activation checkpointing and ``torch.compile`` add to parameter names.
WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """A parameter name without wrapper prefixes: ``_fsdp_wrapped_module.0.weight`` → ``0.weight``."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def is_flat_view(p: torch.Tensor) -> bool:
    """Whether ``p`` is an original parameter whose data FSDP1 replaced by a view into a flat shard."""
    return bool(getattr(p, "_fsdp_flattened", False)) and not is_flat_parameter(p)


def is_flat_parameter(p: torch.Tensor) -> bool:
    """Whether ``p`` is an FSDP1 ``FlatParameter`` itself (``use_orig_params=False``)."""
    return bool(p.__dict__.get("_is_flat_param", False))


@dataclass(frozen=True)
class FlatSlice:
    """One original parameter as FSDP1 shards it.

    Attributes:
        name: the parameter's name (wrapper prefixes removed).
        shape: its original shape.
        start: first element of ``vec(p)`` this rank holds.
        numel: number of elements this rank holds (0 for an empty slice).
        ranges: ``(start, numel)`` of every rank of ``group``, in rank order (after :func:`exchange_ranges`).
        group: the process group FSDP shards over (the shard group of ``HYBRID_SHARD``).
        rank: this process's rank in ``group``.
        module: the module that owns the parameter (for routing by type).
    """

    name: str
    shape: tuple[int, ...]
    start: int
    numel: int
    ranges: tuple[tuple[int, int], ...] = ()
    group: Any = None
    rank: int = 0
    module: nn.Module | None = field(default=None, compare=False, repr=False)

    @property
    def matrix(self) -> tuple[int, int]:
        """The matrix the update acts on: ``(out, in·k·…)``."""
        return (self.shape[0], math.prod(self.shape[1:])) if len(self.shape) >= 2 else (1, 0)

    @property
    def world(self) -> int:
        return len(self.ranges)

    def touched_rows(self, rank: int | None = None) -> tuple[int, int]:
        """Rows ``[first, end)`` that contain at least one element of ``rank``'s slice (this rank by default)."""
        start, numel = (self.start, self.numel) if rank is None else self.ranges[rank]
        n = self.matrix[1]
        if numel == 0 or n == 0:
            return (0, 0)
        return start // n, (start + numel - 1) // n + 1


def _fsdp_instances() -> list[Any]:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return [o for o in gc.get_objects() if issubclass(type(o), FullyShardedDataParallel)]


def flat_slices(params: list[torch.Tensor]) -> dict[int, FlatSlice]:
    """A :class:`FlatSlice` (without ``ranges``) for every FSDP1 flat view in ``params``, keyed by ``id``.

    The live ``FullyShardedDataParallel`` instances are found once (a scan of the objects the
    garbage collector tracks) and their flat parameters matched against ``params``; names are the
    outermost instance's ``named_parameters()`` names without wrapper prefixes.

    Raises:
        ValueError: a ``FlatParameter`` (``use_orig_params=False``), CPU offload, or a flat view
            that no live FSDP instance holds.
    """
    for p in params:
        if is_flat_parameter(p):
            raise ValueError(
                "FullyShardedDataParallel was built with use_orig_params=False: the optimizer got 1-D "
                "FlatParameters without the matrices' shapes. Build it with use_orig_params=True "
                "(Lightning/Fabric FSDPStrategy use it by default; FSDPStrategy(use_orig_params=True))."
            )
    wanted = {id(p) for p in params if is_flat_view(p)}
    if not wanted:
        return {}
    instances = _fsdp_instances()
    names: dict[int, str] = {}
    for fsdp in instances:  # the outermost instance gives the longest (full) name
        for name, p in fsdp.named_parameters():
            name = clean_name(name)
            if id(p) in wanted and len(name) > len(names.get(id(p), "")):
                names[id(p)] = name
    out: dict[int, FlatSlice] = {}
    for fsdp in instances:
        handle = getattr(fsdp, "_handle", None)
        if handle is None:
            continue
        flat = handle.flat_param
        for i, p in enumerate(flat._params or ()):
            if id(p) not in wanted:
                continue
            if handle._offload_params:
                raise ValueError(
                    f"parameter {names.get(id(p), flat._fqns[i])!r} is offloaded to the CPU by FSDP "
                    "(cpu_offload=CPUOffload(offload_params=True)); Muon-family optimizers orthogonalize on the "
                    "compute device: turn CPU offload off (FSDPStrategy(cpu_offload=False))"
                )
            info = flat._shard_param_infos[i]
            start = info.intra_param_start_idx if info.in_shard else 0
            numel = info.numel_in_shard if info.in_shard else 0
            module = flat._param_infos[i].module
            out[id(p)] = FlatSlice(
                names.get(id(p), flat._fqns[i]), tuple(flat._shapes[i]), start, numel,
                group=handle.process_group, rank=handle.rank, module=module,
            )  # fmt: skip
    missing = wanted - out.keys()
    if missing:
        raise ValueError(
            f"{len(missing)} parameters are FSDP1 flat views but no live FullyShardedDataParallel holds them; "
            "build the optimizer from the parameters of the wrapped model after wrapping it"
        )
    return out


def exchange_ranges(slices: list[FlatSlice]) -> list[FlatSlice]:
    """``slices`` with every rank's ``(start, numel)`` filled in (one ``all_gather`` per process group).

    Every rank must pass the same parameters in the same order. Raises ``ValueError`` when the
    ranges do not tile each parameter in rank order (a layout the executor cannot make exact).
    """
    by_group: dict[int, list[int]] = {}
    for i, s in enumerate(slices):
        by_group.setdefault(id(s.group), []).append(i)
    out = list(slices)
    for members in by_group.values():
        group = slices[members[0]].group
        world = dist.get_world_size(group)
        mine = torch.tensor(
            [[slices[i].start, slices[i].numel] for i in members], dtype=torch.int64
        )
        device = _group_device(group)
        mine = mine.to(device)
        gathered = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(gathered, mine, group=group)
        table = torch.stack(gathered).cpu().tolist()  # (world, members, 2)
        for j, i in enumerate(members):
            ranges = tuple((int(table[r][j][0]), int(table[r][j][1])) for r in range(world))
            out[i] = replace(slices[i], ranges=ranges)
            _check_tiling(out[i])
    return out


def _group_device(group: Any) -> torch.device:
    backend = dist.get_backend(group)
    if backend == "nccl" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _check_tiling(s: FlatSlice) -> None:
    position = 0
    for start, numel in s.ranges:
        if numel == 0:
            continue
        if start != position:
            raise ValueError(
                f"parameter {s.name!r}: FSDP shards its elements out of rank order ({s.ranges}); the exact "
                "owner-computes step needs contiguous ranges in rank order (use the default FSDP sharding)"
            )
        position += numel
    if position != math.prod(s.shape):
        raise ValueError(
            f"parameter {s.name!r}: the ranks hold {position} of its {math.prod(s.shape)} elements"
        )
