"""The one interface between an optimizer's algorithm and whatever executes it.

A Muon-family update of a stack of same-shape matrices ``G (N, m, n)`` with state ``S`` is

.. math::

    X = \\mathrm{begin}(G, S), \\qquad O = \\mathrm{orth}(X), \\qquad
    U = \\mathrm{finish}(O, S, \\mathrm{ctx}), \\qquad W ← W(1 - ηλ) - η U.

``begin`` and ``finish`` are elementwise or row-wise (they run on whatever rows a process holds);
``orth`` needs whole matrices (an executor may move ``X`` to another process first); ``finish``
sums over whole matrices only through ``ctx.matrix_sum``, which an executor of row shards
all-reduces. An optimizer supplies one :class:`MatrixStep` per param group; executors
(:class:`~lightning_muon.engine.local.LocalExecutor`, the distributed ones) call nothing else.

Example:
    >>> import torch
    >>> from lightning_muon.core.orthogonalizers import make_orthogonalizer
    >>> class SignStep(MatrixStep):
    ...     def init_state(self, p):
    ...         return {}
    ...     def begin(self, G, S):
    ...         return G.sign()
    ...     def finish(self, O, S, ctx):
    ...         return O * self.h["scale"]
    >>> step = SignStep({"scale": 0.5}, make_orthogonalizer("jordan"))
    >>> X = step.begin(torch.randn(1, 4, 8), {})
    >>> step.finish(step.orthogonalizer(X), {}, MatrixContext((4, 8))).shape
    torch.Size([1, 4, 8])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.normalize import MatrixSum, local_matrix_sum
from ..core.orthogonalizers import Orthogonalizer


@dataclass(frozen=True)
class MatrixContext:
    """What ``finish`` may know about the matrices beyond its rows.

    Attributes:
        shape: the whole matrix shape ``(m, n)`` (a process may hold fewer rows).
        matrix_sum: the sum of each whole matrix from the rows held, ``(N, m_r, n) → (N, 1, 1)``.
    """

    shape: tuple[int, int]
    matrix_sum: MatrixSum = field(default=local_matrix_sum)


class MatrixStep:
    """An optimizer's algorithm for one param group.

    Args:
        h: the hyperparameters (the param group), read-only.
        orthogonalizer: ``X ↦ O`` for whole matrices.

    Subclasses implement :meth:`init_state`, :meth:`begin` and :meth:`finish`. The keys in
    :attr:`scheduled` are handed to compiled hooks as 0-d tensors, so a schedule that changes
    them between steps does not recompile.
    """

    #: Hyperparameters that schedules change during training (tensors under ``torch.compile``).
    scheduled: tuple[str, ...] = ("momentum", "beta2", "betas")

    def __init__(self, h: Mapping[str, Any], orthogonalizer: Orthogonalizer) -> None:
        self.h = h
        self.orthogonalizer = orthogonalizer

    def init_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """Fresh state tensors of a matrix parameter (fp32, or fp64 for fp64 parameters)."""
        raise NotImplementedError

    def begin(self, G: torch.Tensor, S: dict[str, torch.Tensor]) -> torch.Tensor:
        """Update the stacked state ``S`` in place from gradients ``G (N, m, n)``; return ``X``.

        ``G`` is the executor's scratch copy of the gradients (in the state dtype): ``begin`` may
        overwrite it, e.g. with the Nesterov look-ahead, so the orthogonalizer input is written
        once. ``S["step"]`` (``(N, 1, 1)``) is already incremented. The result may alias ``S`` or
        ``G``; orthogonalizers never modify it.
        """
        raise NotImplementedError

    def finish(
        self, O: torch.Tensor, S: dict[str, torch.Tensor], ctx: MatrixContext
    ) -> torch.Tensor:
        """Turn the orthogonalized ``O`` into the update ``U`` (applied as ``W ← W − lr·U``).

        ``O`` is a fresh tensor the executor owns (orthogonalizers return new tensors), so
        ``finish`` may write ``U`` over it: a one-pass finish needs no temporary of its size.
        """
        raise NotImplementedError

    def static_scale(self, ctx: MatrixContext) -> float | None:
        """``c`` if :meth:`finish` is always ``O ↦ c·O`` (no state, no statistic), else ``None``.

        Executors then skip :meth:`finish` and apply ``W ← W − η·c·O`` in one pass, with no
        temporary for ``U``.
        """
        return None

    def with_hyperparameters(self, h: Mapping[str, Any]) -> MatrixStep:
        """The same algorithm and orthogonalizer with other hyperparameters."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__, h=h)
        return clone


@dataclass
class Capture:
    """Orthogonalized directions to record: ``ids`` of the parameters, ``directions`` filled by executors."""

    ids: set[int] = field(default_factory=set)
    directions: dict[torch.Tensor, torch.Tensor] = field(default_factory=dict)

