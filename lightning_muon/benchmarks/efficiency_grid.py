"""The efficiency benchmark's adaptive learning-rate grid: matrix lr × AdamW-branch lr, factors of 2.

A Muon-family optimizer has two learning rates: ``lr`` for the hidden matrices and
``adamw_lr = lr · adamw_lr_ratio`` for the embeddings, head, norms and biases. The grid is indexed
by integer exponents ``(i, j)``:

.. math::

    \\mathrm{lr} = \\mathrm{lr}_0 \\cdot 2^i, \\qquad
    \\mathrm{adamw\\_lr} = a_0 \\cdot 2^j, \\qquad
    \\mathrm{adamw\\_lr\\_ratio} = \\mathrm{adamw\\_lr} / \\mathrm{lr}

Search (the same for every optimizer): evaluate the centre and its four neighbours (a cross:
``(0, 0), (±1, 0), (0, ±1)``); while the best cell has no evaluated neighbour on a side of an axis
(it sits on the grid's edge there), add that neighbour (``(i ± 1, j)`` or ``(i, j ± 1)``), at most
``max_extensions`` rounds. It ends with the best cell bracketed on both axes: all four neighbours
evaluated and worse. A diverged cell counts as evaluated, so an optimum next to a divergence is
bracketed. The AdamW baseline has one lr: the same search in 1-D (``(0, 0), (±1, 0)``). A grid
may also be searched along one axis only (``axes="lr"`` or ``"adamw"``: the other lr stays at
its centre), a cheaper search when the other axis is known.

Example (the search itself, on a known bowl with its minimum at ``(i, j) = (2, -1)``):
    >>> bowl = lambda i, j: (i - 2) ** 2 + (j + 1) ** 2
    >>> cells = search({"x": True}, lambda todo: {c: bowl(*c[1]) for c in todo}, max_extensions=5)
    >>> min(cells["x"], key=cells["x"].get)
    (2, -1)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Index = tuple[int, int]


@dataclass(frozen=True)
class Grid:
    """One optimizer's grid: its name, the centre ``(lr0, adamw_lr0)`` and fixed constructor kwargs.

    ``adamw_lr0 is None`` makes a 1-D grid (the AdamW baseline: one lr)."""

    label: str
    optimizer: str
    lr0: float
    adamw_lr0: float | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    axes: str = "both"

    @property
    def two_d(self) -> bool:
        return self.adamw_lr0 is not None

    @property
    def search_axes(self) -> str:
        """``"both"``, ``"lr"`` (1-D grids) or ``"adamw"``."""
        return self.axes if self.two_d else "lr"

    def lrs(self, index: Index) -> tuple[float, float | None]:
        """``(lr, adamw_lr)`` of a cell."""
        i, j = index
        lr = self.lr0 * 2.0**i
        return lr, (self.adamw_lr0 * 2.0**j if self.adamw_lr0 is not None else None)

    def job(self, index: Index, seed: int) -> tuple[str, float, int, dict[str, Any]]:
        """The run ``(optimizer, lr, seed, kwargs)`` of a cell (the ratio derived from both lrs)."""
        lr, adamw_lr = self.lrs(index)
        kwargs = dict(self.kwargs)
        if adamw_lr is not None:
            kwargs["adamw_lr_ratio"] = adamw_lr / lr
        return self.optimizer, lr, seed, kwargs


def _sides(index: Index, axes: str | bool) -> list[Index]:
    i, j = index
    lr_side, adamw_side = [(i - 1, j), (i + 1, j)], [(i, j - 1), (i, j + 1)]
    axes = {True: "both", False: "lr"}.get(axes, axes)
    return {"both": lr_side + adamw_side, "lr": lr_side, "adamw": adamw_side}[axes]


def _extensions(cells: dict[Index, float], two_d: bool | str) -> set[Index]:
    """The cells to add: the best cell's neighbours on every side where it has none yet."""
    finite = {c: v for c, v in cells.items() if math.isfinite(v)}
    if not finite:
        return set()
    bi, bj = min(finite, key=finite.get)
    return {c for c in _sides((bi, bj), two_d) if c not in cells}


def search(
    grids: dict[str, bool],
    evaluate: Callable[[list[tuple[str, Index]]], dict[tuple[str, Index], float]],
    max_extensions: int,
) -> dict[str, dict[Index, float]]:
    """Adaptive search on several grids at once (``grids``: label → 2-D?, or the axes to search:
    ``"both"``, ``"lr"``, ``"adamw"``).

    ``evaluate`` gets every pending ``(label, (i, j))`` of a round in one call (so the runs of all
    optimizers can share worker processes) and returns their final losses (``inf``: diverged).
    Returns each grid's evaluated cells."""
    cells: dict[str, dict[Index, float]] = {label: {} for label in grids}
    pending = {label: [(0, 0), *_sides((0, 0), axes)] for label, axes in grids.items()}
    for _ in range(max_extensions + 1):
        todo = [(label, c) for label, cs in pending.items() for c in sorted(cs)]
        if not todo:
            break
        for (label, c), loss in evaluate(todo).items():
            cells[label][c] = loss
        pending = {label: sorted(_extensions(cells[label], grids[label])) for label in grids}
    return cells


def best_cell(cells: dict[Index, float]) -> Index:
    """The cell with the lowest final loss."""
    return min(cells, key=lambda c: cells[c] if math.isfinite(cells[c]) else math.inf)


def on_edge(cells: dict[Index, float], two_d: bool | str) -> list[str]:
    """The sides on which the best cell is not bracketed (empty when the optimum is interior).

    Only the searched axes count (``two_d`` as in :func:`search`)."""
    bi, bj = best_cell(cells)
    names = {
        (bi - 1, bj): "lr low", (bi + 1, bj): "lr high",
        (bi, bj - 1): "AdamW-branch lr low", (bi, bj + 1): "AdamW-branch lr high",
    }  # fmt: skip
    return [names[c] for c in _sides((bi, bj), two_d) if c not in cells]
