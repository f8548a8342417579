r"""A plain loop over matrices that applies a reference update: the oracle one can read.

.. math::

    W ← W(1 - ηλ) - η U, \qquad U = \mathrm{update}(G, \mathrm{state}, hp)

for every weight with a gradient, one after the other, in float64 unless told otherwise. A weight
with more than two dimensions (a conv kernel) is viewed as the matrix ``(out, in·k·…)``, as the
optimizers do.

Example:
    >>> import torch
    >>> from lightning_muon.optim.registry import spec_for
    >>> W = torch.randn(4, 6)
    >>> ref = spec_for("muon").reference_optimizer([W], orthogonalizer="svd")
    >>> [w.shape for w in ref.step([torch.randn(4, 6)])]
    [torch.Size([4, 6])]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .algorithms import ALGORITHMS

Update = Callable[[torch.Tensor, dict, Mapping[str, Any]], torch.Tensor]


def decoupled_step(
    W: torch.Tensor, U: torch.Tensor, lr: float, weight_decay: float
) -> torch.Tensor:
    """``W(1 - η·λ) - η·U``: decoupled weight decay with the base learning rate, then the step."""
    if lr == 0:
        return W
    return W * (1 - lr * weight_decay) - lr * U


class ReferenceOptimizer:
    """Per-matrix reference optimizer over copies of ``weights``.

    Args:
        weights: the initial weights (``ndim >= 2``), copied in ``dtype``.
        algorithm: a registry name (``"normuon"``) or an update function of
            :mod:`lightning_muon.reference.algorithms`.
        hp: every hyperparameter the update reads, plus ``lr`` and ``weight_decay``.
        dtype: the working precision.
    """

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        algorithm: str | Update,
        hp: Mapping[str, Any],
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.update: Update = ALGORITHMS[algorithm] if isinstance(algorithm, str) else algorithm
        self.hp = dict(hp)
        self.shapes = [tuple(w.shape) for w in weights]
        self.weights = [w.detach().to(dtype).reshape(w.shape[0], -1).clone() for w in weights]
        self.states: list[dict] = [{} for _ in weights]

    def step(self, grads: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        """One step; ``None`` leaves that weight and its state alone. Returns the weights."""
        lr, weight_decay = self.hp["lr"], self.hp["weight_decay"]
        for i, G in enumerate(grads):
            W = self.weights[i]
            if G is None or W.numel() == 0:
                continue
            U = self.update(G.detach().to(W.dtype).reshape(W.shape), self.states[i], self.hp)
            self.weights[i] = decoupled_step(W, U, lr, weight_decay)
        return [w.reshape(shape) for w, shape in zip(self.weights, self.shapes, strict=True)]
