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

``p`` is clipped to ``[0, 1]``, so ``f`` stays at ``r`` after ``T`` steps. ``T`` and ``W`` are whole
numbers of steps (``10.5`` is refused). Warmup takes at most half the run: a ``warmup_steps`` larger
than ``⌊T/2⌋`` is clamped to ``W = ⌊T/2⌋`` with a warning, so a short smoke run of a recipe (say
``max_steps=10`` with 20 warmup steps) still warms up and decays.

**Resuming.** The length and shape of a schedule (``total_steps``, ``warmup_steps``,
``min_lr_ratio``, ``decay_fraction``) are settings of the run, not state: ``load_state_dict``
restores only the step count ``k`` and the base learning rates, keeps the values this schedule was
built with, and sets every group's lr to ``base_lr · f(k)`` of the new schedule. Resuming with a
larger ``T`` (e.g. ``--trainer.max_steps 600`` from a checkpoint of a 300-step run, when
``total_steps`` comes from the Trainer) therefore *extends* the schedule: step ``k`` continues on
the curve of a ``T``-step run, and a warning gives the lr factor before and after. Resuming at or past
the end (``k ≥ T``) warns that the schedule has ended and names the lr that the remaining steps get.
For runs you mean to extend, WSD is the schedule whose plateau extends without a jump.

Because the AdamW branch of
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
import numbers
from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_warn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

SETTINGS = (
    "total_steps",
    "warmup_steps",
    "requested_warmup_steps",
    "min_lr_ratio",
    "decay_fraction",
)
"""Attributes that describe the schedule (kept from the constructor when a state is loaded)."""


def _is_whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


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
        name = type(self).__name__
        if not _is_whole(total_steps) or total_steps < 1:
            raise ValueError(
                f"{name}: total_steps must be a positive integer, got {total_steps!r} (set it, or "
                "let the Trainer fill it in from max_steps/max_epochs)."
            )
        if not _is_whole(warmup_steps) or warmup_steps < 0:
            raise ValueError(
                f"{name}: warmup_steps must be a non-negative integer, got {warmup_steps!r}."
            )
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"{name}: min_lr_ratio must lie in [0, 1], got {min_lr_ratio!r}.")
        self.total_steps = int(total_steps)
        self.requested_warmup_steps = int(warmup_steps)
        self.warmup_steps = min(int(warmup_steps), self.total_steps // 2)
        if self.warmup_steps < warmup_steps:
            rank_zero_warn(
                f"{name}: warmup_steps={warmup_steps} is more than half of total_steps="
                f"{self.total_steps}; warming up over {self.warmup_steps} steps instead "
                "(warmup takes at most half the run)."
            )
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

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step count and base lrs; keep this schedule's settings (see "Resuming")."""
        state = {key: value for key, value in state_dict.items() if key not in SETTINGS}
        saved = {key: state_dict[key] for key in SETTINGS if key in state_dict}
        before = self._saved_multiplier(saved, int(state_dict.get("last_epoch", 0)))
        super().load_state_dict(state)
        step, factor = self.last_epoch, self.multiplier(self.last_epoch)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base_lr * factor
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        name = type(self).__name__
        if step >= self.total_steps:
            rank_zero_warn(
                f"{name}: resumed at step {step}, but the schedule ends at total_steps="
                f"{self.total_steps}: it has ended, and every further step runs at "
                f"{factor:g} × lr = {self._last_lr[0]:g}"
                + (" (nothing will train)" if factor == 0.0 else "")
                + ". Raise trainer.max_steps (or total_steps) to extend it."
            )
        elif saved.get("total_steps", self.total_steps) != self.total_steps:
            rank_zero_warn(
                f"{name}: the checkpoint's schedule ran over {saved['total_steps']} steps; it now "
                f"runs over total_steps={self.total_steps}, so at step {step} the lr factor goes "
                f"from {before:g} to {factor:g} (lr {self._last_lr[0]:g})."
            )

    def _saved_multiplier(self, saved: dict[str, Any], step: int) -> float:
        """``f(step)`` of the schedule a state was saved from (its settings in ``saved``)."""
        current = {key: getattr(self, key) for key in SETTINGS if hasattr(self, key)}
        try:
            for key, value in saved.items():
                setattr(self, key, value)
            return self.multiplier(step)
        finally:
            for key, value in current.items():
                setattr(self, key, value)


#: The ``Args:`` lines every decaying schedule shares (filled into their docstrings).
_DECAY_ARGS = (
    "        optimizer: Wrapped optimizer.\n"
    "        total_steps: Total optimizer steps of the run (``None``: filled in from the Trainer).\n"
    "        warmup_steps: Steps of linear warmup from ``lr/warmup_steps`` to ``lr``.\n"
    "        min_lr_ratio: Final learning rate as a fraction of the base learning rate.\n"
    "        last_epoch: Index of the last step taken (``-1``: start fresh).\n"
)


def _decay_args(cls: type) -> type:
    """Append the shared ``Args:`` section to ``cls``'s docstring (read by LightningCLI's help)."""
    cls.__doc__ = f"{cls.__doc__.rstrip()}\n\n    Args:\n{_DECAY_ARGS}    "
    return cls


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


@_decay_args
class WarmupCosineLR(_WarmupSchedule):
    """Linear warmup, then cosine decay to ``min_lr_ratio × lr`` at ``total_steps``."""

    def after_warmup(self, step: int) -> float:
        progress = self._progress(step, self.warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


@_decay_args
class WarmupLinearLR(_WarmupSchedule):
    """Linear warmup, then linear decay to ``min_lr_ratio × lr`` (default: zero) at ``total_steps``."""

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
