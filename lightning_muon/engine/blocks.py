"""Structured parameters: one parameter's matrix view cut into row blocks, each its own matrix.

By default a parameter is one matrix ``(out, in·k·…)`` (:func:`~.tensors.matrix_shape`). A
:class:`Blocking` instead views it as ``(R, n)`` and cuts the ``R`` rows into consecutive
blocks of ``rows[b]`` rows: block ``b`` is a matrix ``(rows[b], n)`` that the engine updates as
if it were a parameter of its own (its own orthogonalization, shape scale ``(rows[b], n)``,
whole-matrix sums and row statistics). An ``(E, m, n)`` expert stack is ``rows = (m,)*E``; a
fused QKV weight ``(q + k + v, n)`` is ``rows = (q, k, v)``.

The bucket machinery works on :class:`Blocks` items (runs of consecutive same-shape blocks of one
parameter) exactly as on plain parameters: :func:`matrices` lists the ``(m, ·)`` matrices an
item occupies in any tensor of its parameter (gradient, weight, state), as views, so blocks of
the same shape from different parameters share buckets. State stays per parameter: the
elementwise moments have the parameter's shape, row statistics one value per row of ``(R, n)``,
and ``step`` one counter per block (``(B,)``), so each block counts its own steps even when
its parameter's blocks sit in different buckets.

Example:
    >>> import torch
    >>> w = torch.arange(12.0).view(6, 2)
    >>> item = Blocks(w, Blocking((2, 2, 2), 2), first=1, count=2)
    >>> [m.tolist() for m in matrices(item, w)]
    [[[4.0, 5.0], [6.0, 7.0]], [[8.0, 9.0], [10.0, 11.0]]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .step import MatrixStep
from .tensors import as_rows, local


@dataclass(frozen=True)
class Blocking:
    """A parameter viewed as ``(sum(rows), columns)`` and cut into row blocks of ``rows[b]`` rows.

    ``row_dims`` is how many leading tensor dimensions the rows of that view span: 1 when they are
    the first dimension (a fused QKV weight, any row split), 2 for an expert stack ``(E, m, …)``,
    whose rows are ``E·m``. Row statistics keep that shape (``(R, 1)``, or ``(E, m, 1)``), so that
    a sharded parameter's row statistic can be split like its rows.
    """

    rows: tuple[int, ...]
    columns: int
    row_dims: int = 1

    @property
    def total_rows(self) -> int:
        """``R``, the rows of the matrix view."""
        return sum(self.rows)

    def offset(self, block: int) -> int:
        """First row of ``block`` in the matrix view."""
        return sum(self.rows[:block])


@dataclass(frozen=True, eq=False)
class Blocks:
    """``count`` consecutive blocks (``first``, ``first + 1``, …) of ``param``, all of one shape."""

    param: torch.Tensor
    blocking: Blocking
    first: int
    count: int

    @property
    def shape(self) -> tuple[int, int]:
        """The shape ``(m_b, n)`` of each block."""
        return self.blocking.rows[self.first], self.blocking.columns


Item = torch.Tensor | Blocks


def parameter_of(item: Item) -> torch.Tensor:
    """The parameter an item belongs to."""
    return item.param if isinstance(item, Blocks) else item


def count_of(item: Item) -> int:
    """How many matrices an item contributes to a bucket."""
    return item.count if isinstance(item, Blocks) else 1


def matrices(item: Item, t: torch.Tensor, read_only: bool = False) -> list[torch.Tensor]:
    """The matrices ``item`` occupies in ``t``, a tensor of its parameter's shape or of its state.

    A plain parameter is one matrix ``(rows, -1)`` of the rows this process holds. For :class:`Blocks`:
    a 0-/1-D ``t`` holds per-block counters (``step``: one 0-d view per block); any other ``t``
    is viewed as ``(R, -1)`` (parameter-shaped tensors, row statistics ``(R, 1)``) and sliced.
    The results are views (so writes reach ``t``); ``read_only`` allows a copy for a
    non-contiguous ``t`` (a gradient).
    """
    if not isinstance(item, Blocks):
        return [as_rows(local(t), local(item).shape[0])]
    t = local(t)
    if t.ndim <= 1:
        return list(t.reshape(-1)[item.first : item.first + item.count].unbind(0))
    blocking = item.blocking
    start, (rows, _) = blocking.offset(item.first), item.shape
    total = blocking.total_rows
    # a shard holding none of the rows: a row statistic has one column, the other tensors ``columns``
    empty_columns = 1 if t.shape[-1] == 1 else blocking.columns
    columns = t.numel() // total if total else empty_columns
    full = t.reshape(total, columns) if read_only else t.view(total, columns)
    return list(full[start : start + item.count * rows].view(item.count, rows, columns).unbind(0))


def fresh_state(step: MatrixStep, p: torch.Tensor, blocking: Blocking | None) -> dict[str, Any]:
    """The state a parameter starts with: ``step`` (``()``, or ``(B,)`` for a blocking) and the
    algorithm's tensors, built from the matrix view ``(R, n)`` of a blocked parameter (tensors of
    that view's shape get the parameter's shape back)."""
    if blocking is None:
        return {"step": torch.zeros((), dtype=torch.float32, device=p.device), **step.init_state(p)}
    view = p.detach().view(blocking.total_rows, blocking.columns)
    state: dict[str, Any] = {
        "step": torch.zeros(len(blocking.rows), dtype=torch.float32, device=p.device)
    }
    for key, value in step.init_state(view).items():
        if value.shape == view.shape:
            value = value.view(p.shape)
        elif value.shape == (blocking.total_rows, 1):
            value = value.view(row_state_shape(tuple(p.shape), blocking))
        state[key] = value
    return state


def row_state_shape(shape: tuple[int, ...], blocking: Blocking) -> tuple[int, ...]:
    """The shape of a row statistic of a parameter of ``shape`` cut by ``blocking``."""
    return (*shape[: blocking.row_dims], 1)


def block_units(p: torch.Tensor, blocking: Blocking) -> list[tuple[tuple[int, int], int]]:
    """``((m_b, n), b)`` for every block ``b`` of ``p``."""
    return [((rows, blocking.columns), b) for b, rows in enumerate(blocking.rows)]


def merge_units(units: list[Any], blockings: dict[torch.Tensor, Blocking]) -> list[Item]:
    """Items of a bucket from its units (plain parameters, or ``(param, block)`` pairs): runs of
    consecutive blocks of one parameter become one :class:`Blocks`."""
    items: list[Item] = []
    for unit in units:
        if not isinstance(unit, tuple):
            items.append(unit)
            continue
        p, b = unit
        last = items[-1] if items else None
        if isinstance(last, Blocks) and last.param is p and last.first + last.count == b:
            items[-1] = Blocks(p, last.blocking, last.first, last.count + 1)
        else:
            items.append(Blocks(p, blockings[p], b, 1))
    return items
