"""``MuonMixin``: a LightningModule's ``configure_optimizers`` from its own hyperparameters.

Mix it in before ``LightningModule`` and accept the optimizer settings as ``__init__`` arguments
saved with ``self.save_hyperparameters()``; LightningCLI then exposes them as ``--model.optimizer``,
``--model.lr``, ... The optimizer is built at fit time, inside ``configure_optimizers``, from the
module's named parameters *after* ``configure_model`` (so FSDP2's ``fully_shard`` has already
replaced them), and only settings that were actually given are passed to the optimizer class:
``lr=None`` means "the class's own default", so choosing ``adamw`` never inherits Muon's learning
rate and no default of one class leaks into another. ``lr`` may also be a mapping from optimizer
names to learning rates (``{normuon: 0.02, adamw: 0.003}``, keys resolved like ``optimizer``): the
entry of the chosen optimizer is used, and an optimizer without an entry runs at its own default.
That is how ``recipes/quickstart.yaml`` sets NorMuon's tuned lr without handing it to
``--model.optimizer adamw``. At fit time the mixin logs one line naming the lr and weight decay used
and where each came from.

Hyperparameters read from ``self.hparams`` (all optional):

========================  ===========================================================  ==========
name                      meaning                                                      default
========================  ===========================================================  ==========
``optimizer``             name from ``available_optimizers()``, class name or path     ``"muon"``
``lr``                    base learning rate, or a mapping optimizer name → lr          ``None``
                          (``None``, or a mapping without this optimizer: its default)
``weight_decay``          decoupled weight decay (``None``: the class default)         ``None``
``optimizer_kwargs``      any further constructor arguments, as a dict                 ``None``
``lr_schedule``           ``"constant"``, ``"cosine"``, ``"linear"``, ``"wsd"`` or None  ``None``
``warmup_steps``          linear warmup steps of the schedule                          ``0``
``min_lr_ratio``          final lr / base lr of the schedule                           ``0.0``
``decay_fraction``        WSD only: fraction of the run spent decaying                 ``0.2``
``total_steps``           schedule length (``None``: ``trainer.estimated_stepping_batches``)  ``None``
========================  ===========================================================  ==========

Example:
    >>> import lightning.pytorch as pl
    >>> import torch
    >>> class Net(MuonMixin, pl.LightningModule):
    ...     def __init__(self, optimizer: str = "adamw", lr: float | None = None):
    ...         super().__init__()
    ...         self.save_hyperparameters()
    ...         self.layer = torch.nn.Linear(4, 4)
    >>> Net(lr=0.01).configure_optimizers()["optimizer"].param_groups[0]["lr"]
    0.01
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from torch.optim import Optimizer

from lightning_muon.lightning.factory import (
    OptimizerConfigError,
    build_lr_scheduler,
    build_optimizer,
    check_hparams,
    describe_settings,
    lightning_optimizer_config,
    resolve_optimizer_class,
)
from lightning_muon.lightning.guard import check_live_parameters

HPARAM_DEFAULTS: dict[str, Any] = {
    "optimizer": "muon",
    "lr": None,
    "weight_decay": None,
    "optimizer_kwargs": None,
    "lr_schedule": None,
    "warmup_steps": 0,
    "min_lr_ratio": 0.0,
    "decay_fraction": 0.2,
    "total_steps": None,
}
"""The hyperparameters :class:`MuonMixin` reads, with the value used when one is absent."""


def optimizer_settings(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve the mixin's settings from ``hparams`` and check them (no model needed).

    Returns:
        ``{"cls": class, "kwargs": constructor kwargs, "schedule": name or None,
        "schedule_kwargs": dict, "total_steps": int or None}``.

    Raises:
        OptimizerConfigError: Unknown optimizer or schedule, rejected keyword arguments, or the
            same argument given both directly and in ``optimizer_kwargs``.
    """
    settings = {key: hparams.get(key, default) for key, default in HPARAM_DEFAULTS.items()}
    cls = resolve_optimizer_class(settings["optimizer"])
    settings["lr"] = lr_for(cls, settings["lr"])
    extra = dict(settings["optimizer_kwargs"] or {})
    kwargs: dict[str, Any] = {}
    for key in ("lr", "weight_decay"):
        if settings[key] is not None:
            if key in extra:
                raise OptimizerConfigError(
                    f"{key} is given twice: {key}={settings[key]!r} and "
                    f"optimizer_kwargs[{key!r}]={extra[key]!r}. Give it once."
                )
            kwargs[key] = settings[key]
    kwargs.update(extra)
    check_hparams(cls, kwargs)
    schedule = settings["lr_schedule"]
    schedule_kwargs: dict[str, Any] = {}
    if schedule is not None:
        schedule_kwargs = {
            "warmup_steps": settings["warmup_steps"],
            "min_lr_ratio": settings["min_lr_ratio"],
        }
        if str(schedule).lower() == "wsd":
            schedule_kwargs["decay_fraction"] = settings["decay_fraction"]
    elif settings["warmup_steps"]:
        raise OptimizerConfigError(
            f"warmup_steps={settings['warmup_steps']!r} needs an lr_schedule "
            "('constant', 'cosine', 'linear' or 'wsd')."
        )
    return {
        "cls": cls,
        "kwargs": kwargs,
        "schedule": schedule,
        "schedule_kwargs": schedule_kwargs,
        "total_steps": settings["total_steps"],
    }


def lr_for(cls: type, lr: float | Mapping[str, float] | None) -> float | None:
    """The learning rate ``lr`` gives ``cls``: a number as is, a mapping's entry for ``cls``
    (``None`` when it has none: the class default applies)."""
    if not isinstance(lr, Mapping):
        return lr
    matches = [value for name, value in lr.items() if resolve_optimizer_class(name) is cls]
    if len(matches) > 1:
        raise OptimizerConfigError(
            f"lr={dict(lr)!r} gives {cls.__name__} {len(matches)} learning rates; give one."
        )
    return matches[0] if matches else None


def trainer_total_steps(trainer: Any) -> int:
    """Total optimizer steps of a fit (``trainer.estimated_stepping_batches``), checked finite."""
    steps = trainer.estimated_stepping_batches
    if not math.isfinite(steps) or steps < 1:
        raise OptimizerConfigError(
            f"The learning-rate schedule needs the run length, but the Trainer's is {steps!r}. "
            "Set trainer.max_steps (or max_epochs), or the total_steps hyperparameter."
        )
    return int(steps)


class MuonMixin:
    """Gives a ``LightningModule`` a ``configure_optimizers`` driven by its hyperparameters.

    Use as ``class MyModel(MuonMixin, LightningModule)``. See the module docstring for the
    hyperparameters read; they are checked when ``save_hyperparameters()`` is called. At the start of training the mixin also checks that every Muon-family
    optimizer the Trainer holds updates exactly this module's live parameters (see
    :func:`~lightning_muon.lightning.guard.check_live_parameters`) and raises otherwise, so an
    optimizer built too early (before ``configure_model`` / sharding) can never train silently.
    """

    def save_hyperparameters(self, *args: Any, frame: Any = None, **kwargs: Any) -> None:
        """``LightningModule.save_hyperparameters``, then :meth:`check_optimizer_settings`, so a
        wrong optimizer setting fails when the module is built, not when training starts."""
        if frame is None:
            frame = inspect.currentframe().f_back  # type: ignore[union-attr]
        super().save_hyperparameters(*args, frame=frame, **kwargs)  # type: ignore[misc]
        self.check_optimizer_settings()

    def check_optimizer_settings(self) -> dict[str, Any]:
        """Validate the optimizer hyperparameters without building anything; returns them."""
        return optimizer_settings(getattr(self, "hparams", {}))

    def configure_optimizers(self) -> dict[str, Any]:
        settings = self.check_optimizer_settings()
        optimizer = build_optimizer(self, settings["cls"], **settings["kwargs"])  # type: ignore[arg-type]
        from lightning.pytorch.utilities import rank_zero_info

        rank_zero_info(describe_settings(settings["cls"], settings["kwargs"]))
        routing = getattr(optimizer, "routing", None)
        if routing is not None:
            rank_zero_info(f"{type(optimizer).__name__} parameter routing:\n{routing}")
        scheduler = None
        if settings["schedule"] is not None:
            total = settings["total_steps"]
            if total is None:
                total = trainer_total_steps(self.trainer)  # type: ignore[attr-defined]
            scheduler = build_lr_scheduler(
                optimizer, settings["schedule"], total, **settings["schedule_kwargs"]
            )
        return lightning_optimizer_config(optimizer, scheduler)

    def on_train_start(self) -> None:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None:
            for optimizer in trainer.optimizers:
                check_live_parameters(_unwrap(optimizer), self)  # type: ignore[arg-type]
        parent = super()
        if hasattr(parent, "on_train_start"):
            parent.on_train_start()  # type: ignore[misc]


def _unwrap(optimizer: Any) -> Optimizer:
    return (
        getattr(optimizer, "optimizer", optimizer)
        if not isinstance(optimizer, Optimizer)
        else optimizer
    )
