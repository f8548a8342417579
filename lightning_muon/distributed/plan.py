"""Who orthogonalizes what: same-shape buckets and owner ranks balanced by Newton–Schulz cost.

Newton–Schulz on an ``m × n`` matrix (``a = min(m, n)``, ``b = max(m, n)``) costs, per step,
``A = X Xᵀ`` (``2a²b``), ``B = bA + cA²`` (``2a³``) and ``BX`` (``2a²b``):

.. math::  \\mathrm{cost}(m, n) = T\\,(4a^2 b + 2a^3).

Matrices are assigned greedily, most expensive first, to the least-loaded rank of their group
(longest-processing-time scheduling, within ``4/3`` of the optimal makespan; ties go to the lowest
rank, so equal matrices are dealt round-robin). Every rank computes the same plan from the global
shapes, so no communication is needed to agree on it.

Example:
    >>> assign_owners([8.0, 1.0, 1.0, 4.0, 4.0], world=2)
    [0, 0, 1, 1, 1]
    >>> ns_flops(768, 3072, steps=5)
    40768634880
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..core.orthogonalize import ns_flops as _ns_flops
from ..engine.blocks import Item, parameter_of
from ..engine.buckets import chunks
from .block_layout import BlockLayout
from .layout import Layout


def ns_flops(m: int, n: int, steps: int) -> int:
    """FLOPs of ``steps`` direct-form quintic Newton–Schulz iterations on an ``m × n`` matrix (the
    yardstick; an orthogonalizer's own :meth:`~lightning_muon.core.orthogonalizers.Orthogonalizer.flops`
    balances the owners)."""
    return _ns_flops(m, n, steps, form="direct")


def assign_owners(
    costs: Sequence[float], world: int, loads: list[float] | None = None
) -> list[int]:
    """Owner rank of each item: largest cost first, to the least-loaded rank (``loads`` is updated)."""
    loads = loads if loads is not None else [0.0] * world
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        rank = min(range(world), key=lambda r: (loads[r], r))
        owners[i] = rank
        loads[rank] += costs[i]
    return owners


@dataclass
class Bucket:
    """Same-shape matrices that share a layout, orthogonalized together.

    Attributes:
        shape: the global matrix shape ``(m, n)``.
        layout: how the matrices are spread over ranks.
        params: the parameters (or blocks of structured ones), in param-group order.
        owners: the rank (in ``layout.group``) that orthogonalizes each parameter.
        cost: orthogonalizer FLOPs of one matrix.
    """

    shape: tuple[int, int]
    layout: Layout | BlockLayout
    params: list[Item]
    owners: list[int]
    cost: int

    def owned(self, rank: int) -> list[int]:
        """Positions in the bucket of the matrices ``rank`` orthogonalizes."""
        return [i for i, o in enumerate(self.owners) if o == rank]


def plan_buckets(
    items: Sequence[tuple[Item, tuple[int, int], Layout]],
    cost: Callable[[int, int], float],
    max_bucket_numel: int,
) -> list[Bucket]:
    """Group ``(param, matrix shape, layout)`` items into buckets and assign their owners.

    Buckets key on (shape, dtype, layout); a bucket holds at most ``max_bucket_numel`` elements of
    whole matrices (at least one matrix); ``cost(m, n)`` is one matrix's orthogonalizer FLOPs.
    Loads are balanced per group of ranks (``layout.balance_key``) across all buckets.
    """
    grouped: dict[tuple, list[tuple[Item, tuple[int, int], Layout]]] = {}
    for p, shape, layout in items:
        grouped.setdefault((shape, parameter_of(p).dtype, layout.key), []).append(
            (p, shape, layout)
        )
    buckets: list[Bucket] = []
    for (shape, _, _), members in grouped.items():
        for chunk in chunks(members, shape, max_bucket_numel):
            layout = chunk[0][2]
            buckets.append(Bucket(shape, layout, [p for p, _, _ in chunk], [], cost(*shape)))
    by_group: dict[tuple, list[tuple[Bucket, int]]] = {}
    for b in buckets:
        b.owners = [0] * len(b.params)
        by_group.setdefault(b.layout.balance_key, []).extend((b, i) for i in range(len(b.params)))
    for members in by_group.values():
        owners = assign_owners([b.cost for b, _ in members], members[0][0].layout.world)
        for (b, i), owner in zip(members, owners, strict=True):
            b.owners[i] = owner
    return buckets
