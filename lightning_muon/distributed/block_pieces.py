"""Structured parameters on any DTensor layout: each row block of a sharded parameter as a matrix.

A parameter with a :class:`~lightning_muon.engine.blocks.Blocking` (``structure=``: per-head or
q/k/v blocks of a fused QKV weight, an expert stack) is several matrices. Under a
:class:`~.block_layout.BlockLayout` rank ``r`` holds ``W[R_r][:, C_r]`` of the matrix view, and
block ``b`` of the blocking is

* ``row_dims = 1`` (its rows are tensor dim 0): rows ``[o_b, o_b + m_b)`` of the ``(m, n)`` view.
  Rank ``r`` holds its rows ``R_r ∩ [o_b, o_b + m_b)`` (shifted by ``o_b``) and columns ``C_r``;
* ``row_dims = 2`` (an expert stack ``(E, m, …)``): expert ``e`` is ``W[e]`` viewed ``(m, n')``.
  Rank ``r`` holds it when ``e ∈ R_r`` (dim 0): its dim-1 indices, all ``n'`` columns (dims ≥ 2
  are never split).

Either way a rank's part of block ``b`` is a run of *consecutive local rows* (local rows keep the
global order), so the local shard is cut by a **local blocking** (block ``b`` has as many rows as
the rank holds of it, 0 when none) and the engine's :class:`~lightning_muon.engine.blocks.Blocks`
views read gradients, weights and state of the local shard unchanged.

A block every rank holds either whole or not at all (heads aligned with tensor-parallel shards,
experts on an expert-parallel mesh dimension, any block of a replicated parameter) is **local**:
its holders update it themselves without any communication (replicas compute the same update).
Every other block is a matrix with a :class:`PieceLayout` (the attributes of a block layout that
:class:`~.block_transport.BlockTransport` reads), gathered to an owner like any block-sharded
matrix; blocks with the same piece layout share buckets.

Example (rows ``R_r`` as runs; a block of rows 4–9 of a matrix):
    >>> within(((0, 3), (5, 7), (9, 12)), 4, 10)
    ((1, 3), (5, 6))
"""

from __future__ import annotations

from ..engine.blocks import Blocking
from .block_layout import BlockLayout, HeldRuns, Runs


def within(runs: Runs, start: int, stop: int) -> Runs:
    """The indices of ``runs`` in ``[start, stop)``, shifted by ``-start``."""
    out = []
    for a, b in runs:
        lo, hi = max(a, start), min(b, stop)
        if lo < hi:
            out.append((lo - start, hi - start))
    return tuple(out)


class PieceLayout(HeldRuns):
    """Which rows and columns of one block of a structured parameter each rank holds.

    Attributes:
        matrix: the block's shape ``(m_b, n)``.
        rows, cols: per rank, the runs of the block's rows and columns it holds.
        canonical, row_canonical: per rank, whether it counts the elements / rows it holds in
            whole-matrix sums (one holder of each).
        local: every rank holds the whole block or none of it (no communication needed).
        key: identifies the piece layout (blocks with equal keys share buckets).
    """

    def __init__(
        self,
        parent: BlockLayout,
        matrix: tuple[int, int],
        rows: list[Runs],
        cols: list[Runs],
        row_canonical: list[bool],
    ) -> None:
        self.matrix, self.rows, self.cols = matrix, rows, cols
        self.canonical, self.row_canonical = parent.canonical, row_canonical
        self.group, self.rank, self.world = parent.group, parent.rank, parent.world
        self.mesh, self.placements = parent.mesh, parent.placements
        size = matrix[0] * matrix[1]
        self.local = all(self.nrows(r) * self.ncols(r) in (0, size) for r in range(self.world))
        self.key = (
            "piece",
            matrix,
            tuple(rows),
            tuple(cols),
            tuple(self.canonical),
            tuple(row_canonical),
            parent.key[-1],
        )
        self.balance_key = parent.balance_key


_CACHE: dict[tuple, tuple[Blocking, list[PieceLayout]]] = {}


def block_pieces(layout: BlockLayout, blocking: Blocking) -> tuple[Blocking, list[PieceLayout]]:
    """``(local blocking, piece layout of every block)`` of a parameter laid out by ``layout``.

    Raises:
        ValueError: a blocking that cuts a sharded tensor dimension other than its rows (cannot
            happen for the structures of :mod:`lightning_muon.optim.structure`).
    """
    key = (layout.key, blocking)
    if key not in _CACHE:
        _CACHE[key] = _pieces(layout, blocking)
    return _CACHE[key]


def _pieces(layout: BlockLayout, blocking: Blocking) -> tuple[Blocking, list[PieceLayout]]:
    W, me = layout.world, layout.rank
    pieces = []
    if blocking.row_dims == 1:
        for b, m_b in enumerate(blocking.rows):
            start = blocking.offset(b)
            rows = [within(layout.rows[r], start, start + m_b) for r in range(W)]
            matrix = (m_b, layout.matrix[1])
            pieces.append(
                PieceLayout(layout, matrix, rows, list(layout.cols), layout.row_canonical)
            )
        columns = layout.ncols(me)
    else:
        rest = blocking.columns
        dim1 = [tuple((a // rest, b // rest) for a, b in layout.cols[r]) for r in range(W)]
        row_dims = set(layout.splits.get(0, [])) | set(layout.splits.get(1, []))
        row_canonical = [
            all(c == 0 for d, c in enumerate(layout.coords[r]) if d not in row_dims)
            for r in range(W)
        ]
        whole = ((0, rest),)
        for e, m_e in enumerate(blocking.rows):
            held = [any(a <= e < b for a, b in layout.rows[r]) for r in range(W)]
            rows = [dim1[r] if held[r] else () for r in range(W)]
            pieces.append(PieceLayout(layout, (m_e, rest), rows, [whole] * W, row_canonical))
        columns = rest
    local_rows = tuple(piece.nrows(me) for piece in pieces)
    return Blocking(local_rows, columns, blocking.row_dims), pieces
