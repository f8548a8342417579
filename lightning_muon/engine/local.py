"""The executor of one process, and the work every executor receives.

An optimizer hands each param group of its matrix branch to an executor as a
:class:`MatrixGroup`: the parameters, the group's :class:`~lightning_muon.engine.step.MatrixStep`,
the optimizer's state mapping and the learning rate and weight decay. The executor updates every
matrix that has a gradient and touches nothing else. :class:`LocalExecutor` runs the bucket loop
of one process; the distributed executors (:mod:`lightning_muon.distributed`) move the
orthogonalizer inputs to owner ranks and use this loop for matrices no other rank shares.

Example:
    >>> import torch
    >>> from lightning_muon.core.orthogonalizers import make_orthogonalizer
    >>> class Plain(MatrixStep):  # orthogonalized gradient, no state
    ...     def init_state(self, p):
    ...         return {}
    ...     def begin(self, G, S):
    ...         return G
    ...     def finish(self, O, S, ctx):
    ...         return O
    >>> W = torch.nn.Parameter(torch.eye(4)); W.grad = torch.randn(4, 4)
    >>> group = MatrixGroup([W], Plain({}, make_orthogonalizer("svd")), {W: {}}, lr=0.1)
    >>> with torch.no_grad():  # as inside an optimizer step
    ...     LocalExecutor().run(group)
    >>> int(group.state[W]["step"])
    1
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..core.normalize import local_matrix_sum
from ..core.workspace import thread_workspace
from .blocks import Blocking
from .buckets import (
    DEFAULT_MAX_BUCKET_NUMEL,
    apply_update,
    begin_bucket,
    bucket_states,
    finish_bucket,
    matrix_buckets,
)
from .compiled import ElementwiseHooks
from .step import Capture, MatrixContext, MatrixStep


@dataclass
class MatrixGroup:
    """One param group of the matrix branch, as an executor receives it.

    Attributes:
        params: the group's matrices (those without a gradient are skipped).
        step: the algorithm with the group's hyperparameters.
        state: per-parameter state dicts (the optimizer's ``state``), created on first use.
        lr: learning rate η of ``W ← W(1 − ηλ) − η·U``.
        weight_decay: decoupled weight decay λ.
        max_bucket_numel: the most elements stacked into one batched call.
        hooks: how ``begin``/``finish`` are called (eager or compiled).
        capture: directions to record.
        key: identifies the param group across steps (executors cache their plans by it).
        finite: ``None``, or a 0-d bool device flag: when false, the step leaves every weight and
            state as it was (``nonfinite="skip"`` without a host read).
        blockings: parameters updated as row blocks (:class:`~.blocks.Blocking`); the others are
            one matrix each.
    """

    params: list[torch.Tensor]
    step: MatrixStep
    state: MutableMapping[torch.Tensor, dict[str, Any]]
    lr: float = 0.0
    weight_decay: float = 0.0
    max_bucket_numel: int = DEFAULT_MAX_BUCKET_NUMEL
    hooks: ElementwiseHooks = field(default_factory=lambda: ElementwiseHooks(False))
    capture: Capture = field(default_factory=Capture)
    key: int = 0
    finite: torch.Tensor | None = None
    blockings: Mapping[torch.Tensor, Blocking] = field(default_factory=dict)

    def only(self, params: list[torch.Tensor]) -> MatrixGroup:
        """The same group restricted to ``params``."""
        return replace(self, params=params)


class LocalExecutor:
    """Runs every bucket in this process: ``begin``, orthogonalize, ``finish``, apply; one at a time."""

    def reduce_gradient_flags(
        self, params: list[torch.Tensor], finite: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, bool]:
        """``(finite, any_gradient)``: nothing to agree on in one process."""
        return finite, bool(params)

    def explain_flags(self) -> None:
        """Nothing to explain in one process: the screen names the non-finite gradients itself."""

    def align_skipped_step(self, optimizer: Any) -> None:
        """Nothing to align in one process."""

    def run(self, group: MatrixGroup) -> None:
        """Update every matrix of ``group`` that has a gradient."""
        for shape, plist in matrix_buckets(group.params, group.max_bucket_numel, group.blockings):
            if shape[0] * shape[1] == 0:
                continue
            states = bucket_states(plist, group.step, group.state)
            work = begin_bucket(
                plist, states, group.step, group.hooks, thread_workspace(), group.finite
            )
            O = group.step.orthogonalizer(work.X)
            ctx = MatrixContext(shape, local_matrix_sum)
            U, scale = finish_bucket(work, O, group.step, group.hooks, ctx, group.capture)
            apply_update(plist, U, group.lr, group.weight_decay, scale, group.finite)
            # not alive while the next bucket is computed: peak memory is one bucket's
            del U, O, work
