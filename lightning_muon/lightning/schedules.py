"""Learning-rate schedules used in LLM pretraining, as ``torch.optim.lr_scheduler.LRScheduler`` s.

Each schedule multiplies every param group's base learning rate by ``f(k)``, where ``k`` is the
number of optimizer steps taken so far (Lightning steps them with ``interval="step"``). With ``W``
warmup steps, ``T`` total steps and ``r = min_lr_ratio``:

* warmup (all schedules): ``f(k) = (k + 1) / W`` for ``k < W`` (the first step is not wasted on 0);
* :class:`WarmupConstantLR`: ``f(k) = 1`` afterwards;
* :class:`WarmupCosineLR`: ``f(k) = r + (1 − r) · ½ (1 + cos(π p))`` with ``p = (k − W) / (T − W)``;
* :class:`WarmupLinearLR`: ``f(k) = 1 − (1 − r) p`` (``r = 0``: linear decay to zero);
* :class:`WarmupStableDecayLR` (WSD): ``f(k) = 1`` until the decay starts at
  ``D = T − round(decay_fraction · T)``, then ``f(k) = 1 − (1 − r)(k − D) / (T − D)``.

``p`` is clipped to ``[0, 1]``, so ``f`` stays at ``r`` after ``T`` steps. Because the AdamW branch of
a Muon-family optimizer runs at ``group lr × adamw_lr_ratio``, scaling the group lr scales both
branches together. The scheduler state is plain numbers, so checkpoints load with
``weights_only=True``.

Example:
    >>> import torch
    >>> opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=1.0)
    >>> sched = WarmupCosineLR(opt, total_steps=10, warmup_steps=2)
    >>> lrs = []
    >>> for _ in range(10):
    ...     lrs.append(round(opt.param_groups[0]["lr"], 3))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.5, 1.0, 1.0, 0.962, 0.854, 0.691, 0.5, 0.309, 0.146, 0.038]
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class _WarmupSchedule(LRScheduler):
    """Base class: linear warmup over ``warmup_steps``, then :meth:`after_warmup`."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if total_steps is None or isinstance(total_steps, bool) or total_steps < 1:
            raise ValueError(
                f"{type(self).__name__}: total_steps must be a positive integer, got "
                f"{total_steps!r} (set it, or let the Trainer fill it in from max_steps/max_epochs)."
            )
        if warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(
                f"{type(self).__name__}: warmup_steps must lie in [0, total_steps={total_steps}], "
                f"got {warmup_steps!r}."
            )
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(
                f"{type(self).__name__}: min_lr_ratio must lie in [0, 1], got {min_lr_ratio!r}."
            )
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, last_epoch)

    def multiplier(self, step: int) -> float:
        """The factor ``f(step)`` applied to every group's base learning rate."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.after_warmup(step)

    def after_warmup(self, step: int) -> float:
        raise NotImplementedError

    def _progress(self, step: int, start: int) -> float:
        span = self.total_steps - start
        if span <= 0:
            return 1.0
        return min(1.0, max(0.0, (step - start) / span))

    def get_lr(self) -> list[float]:
        factor = self.multiplier(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]


class WarmupConstantLR(_WarmupSchedule):
    """Linear warmup over ``warmup_steps``, then the constant base learning rate.

    Args:
        optimizer: Wrapped optimizer.
        total_steps: Total optimizer steps of the run (``None``: filled in from the Trainer).
        warmup_steps: Steps of linear warmup from ``lr/warmup_steps`` to ``lr``.
        min_lr_ratio: Unused by this schedule (accepted so all schedules share one signature).
        last_epoch: Index of the last step taken (``-1``: start fresh).
    """

    def after_warmup(self, step: int) -> float:
        return 1.0


class WarmupCosineLR(_WarmupSchedule):
    """Linear warmup, then cosine decay to ``min_lr_ratio × lr`` at ``total_steps``.

    Args:
        optimizer: Wrapped optimizer.
        total_steps: Total optimizer steps of the run (``None``: filled in from the Trainer).
        warmup_steps: Steps of linear warmup from ``lr/warmup_steps`` to ``lr``.
        min_lr_ratio: Final learning rate as a fraction of the base learning rate.
        last_epoch: Index of the last step taken (``-1``: start fresh).
    """

    def after_warmup(self, step: int) -> float:
        progress = self._progress(step, self.warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


class WarmupLinearLR(_WarmupSchedule):
    """Linear warmup, then linear decay to ``min_lr_ratio × lr`` (default: zero) at ``total_steps``.

    Args:
        optimizer: Wrapped optimizer.
        total_steps: Total optimizer steps of the run (``None``: filled in from the Trainer).
        warmup_steps: Steps of linear warmup from ``lr/warmup_steps`` to ``lr``.
        min_lr_ratio: Final learning rate as a fraction of the base learning rate.
        last_epoch: Index of the last step taken (``-1``: start fresh).
    """

    def after_warmup(self, step: int) -> float:
        progress = self._progress(step, self.warmup_steps)
        return 1.0 - (1.0 - self.min_lr_ratio) * progress


class WarmupStableDecayLR(_WarmupSchedule):
    """Warmup-stable-decay (WSD): warmup, a constant plateau, then a linear cool-down over the last
    ``decay_fraction`` of the run to ``min_lr_ratio × lr``.

    Args:
        optimizer: Wrapped optimizer.
        total_steps: Total optimizer steps of the run (``None``: filled in from the Trainer).
        warmup_steps: Steps of linear warmup from ``lr/warmup_steps`` to ``lr``.
        min_lr_ratio: Final learning rate as a fraction of the base learning rate.
        decay_fraction: Fraction of ``total_steps`` spent in the final decay, in [0, 1].
        last_epoch: Index of the last step taken (``-1``: start fresh).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        decay_fraction: float = 0.2,
        last_epoch: int = -1,
    ) -> None:
        if not 0.0 <= decay_fraction <= 1.0:
            raise ValueError(
                f"WarmupStableDecayLR: decay_fraction must lie in [0, 1], got {decay_fraction!r}."
            )
        self.decay_fraction = float(decay_fraction)
        super().__init__(optimizer, total_steps, warmup_steps, min_lr_ratio, last_epoch)

    @property
    def decay_start(self) -> int:
        """First step of the decay phase (never inside the warmup)."""
        start = self.total_steps - round(self.decay_fraction * self.total_steps)
        return max(self.warmup_steps, start)

    def after_warmup(self, step: int) -> float:
        if step < self.decay_start:
            return 1.0
        progress = self._progress(step, self.decay_start)
        return 1.0 - (1.0 - self.min_lr_ratio) * progress


SCHEDULES: dict[str, type[_WarmupSchedule]] = {
    "constant": WarmupConstantLR,
    "cosine": WarmupCosineLR,
    "linear": WarmupLinearLR,
    "wsd": WarmupStableDecayLR,
}
"""Schedule names accepted by :func:`lightning_muon.lightning.factory.build_lr_scheduler`."""
