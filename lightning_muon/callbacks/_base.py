"""Shared machinery of the diagnostic callbacks: due steps, snapshots, logging, checkpoint state.

Steps are counted as Lightning's loggers count them: the optimizer step with index ``s`` is the
one that runs when ``trainer.global_step == s`` and takes it to ``s + 1`` (the 300th step has
index 299, the ``step`` a logger shows for that batch's ``training_step`` metrics). Records,
logged metrics, images and plot titles all use this index. A step is *due* when
``(s + 1) % every_n_steps == 0``, like Lightning's ``log_every_n_steps``. Only then does a
callback touch the parameters:

1. ``on_before_optimizer_step`` (fires once per optimizer step, after the last micro-batch of an
   accumulation window, inside the closure, before the update) copies the chosen parameters
   (the weights *before* the step) and lets the subclass prepare (e.g. ask the optimizer to
   capture its orthogonalized direction);
2. ``on_train_batch_end`` (after the step) measures, appends records to :attr:`records` and logs.

Off-interval steps cost one modulo and one attribute test. On a due step rank zero's values are
broadcast and put into ``trainer.callback_metrics`` on every rank, so ``ModelCheckpoint(monitor=
...)`` and ``EarlyStopping`` (and any callback after the monitor) can use them, and go to every
logger of ``trainer.loggers`` at that step (``Logger.log_metrics``, as ``LearningRateMonitor``
does), independently of ``log_every_n_steps``. Non-finite values are not logged (the history
keeps them). Images and histograms go to the loggers that
have an API for them (:mod:`lightning_muon.callbacks._media`). The history lives on global rank
zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer

from lightning_muon.callbacks._selection import select_parameters
from lightning_muon.diagnostics.checkpoint import history_state, records_from_state
from lightning_muon.diagnostics.history import SpectrumRecord, UpdateNormRecord

Record = UpdateNormRecord | SpectrumRecord


@dataclass
class _Entry:
    name: str
    param: Tensor
    optimizer: Optimizer
    before: Tensor | None


@dataclass
class _Pending:
    step_before: int
    batch: int
    entries: list[_Entry] = field(default_factory=list)
    capturing: list[Optimizer] = field(default_factory=list)


def _check_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        kind = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


class DiagnosticMonitor(Callback):
    """Base class of :class:`UpdateNormMonitor` and :class:`SpectrumMonitor` (not used directly).

    Args:
        every_n_steps: measure the optimizer steps with index ``s`` (``trainer.global_step``
            before the step) where ``s + 1`` is a multiple of this.
        params: ``fnmatch`` glob(s) on parameter names (as in ``named_parameters()``, without
            ``torch.compile``/FSDP wrapper components). ``None``: the optimizer's ``"muon"``
            branch, else the hidden matrices that branch would take (no embeddings, output head,
            norms or biases).
        max_params: watch at most this many parameters (spread over depth); ``None``: no cap.
        max_history: keep records of this many most recent due steps in memory (``None``: all).
    """

    _kind: str = "update_norm"
    _snapshot: bool = True

    def __init__(
        self,
        every_n_steps: int,
        params: str | list[str] | None,
        max_params: int | None,
        max_history: int | None,
    ) -> None:
        _check_int("every_n_steps", every_n_steps)
        _check_int("max_params", max_params, allow_none=True)
        _check_int("max_history", max_history, allow_none=True)
        if isinstance(params, str):
            params = [params]
        if params is not None:
            params = list(params)
            bad = [p for p in params if not isinstance(p, str) or not p]
            if bad or not params:
                raise ValueError(
                    f"params must be None or a non-empty list of non-empty name patterns, got {params!r}"
                )
        self.every_n_steps = every_n_steps
        self.params = params
        self.max_params = max_params
        self.max_history = max_history
        self.records: list[Any] = []
        self._selected: list[tuple[str, Tensor]] = []
        self._pending: _Pending | None = None
        self._noted: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ subclass hooks
    def _prepare(self, pending: _Pending, optimizer: Optimizer, entries: list[_Entry]) -> None:
        """Before the step, on due steps (e.g. ask for captured directions)."""

    def _measure(self, trainer: pl.Trainer, pending: _Pending, step: int) -> list[Any]:
        """After the step, on every rank (collectives allowed); returns records on rank zero."""
        raise NotImplementedError

    def _release(self, pending: _Pending) -> None:
        """After measuring or when the step did not happen (e.g. stop capturing)."""

    def _key(self, record: Any, metric: str) -> str:
        raise NotImplementedError

    def _log_media(self, trainer: pl.Trainer, records: list[Any], step: int) -> None:
        """Histograms/images for loggers that support them (rank zero)."""

    def _config(self) -> dict[str, Any]:
        return {
            "every_n_steps": self.every_n_steps,
            "params": self.params,
            "max_params": self.max_params,
        }

    def _identity(self) -> dict[str, Any]:
        """What tells two monitors of one class apart in a checkpoint (see :attr:`state_key`)."""
        return {"params": self.params}

    @property
    def state_key(self) -> str:
        """Key of this monitor's state in ``checkpoint["callbacks"]``: class and watched parameters.

        Two monitors of one class coexist when they watch different ``params`` (spectra: or
        different ``sources``); the interval and caps may change between runs without losing
        the history.
        """
        return self._generate_state_key(**self._identity())

    # ------------------------------------------------------------------ messages
    def _note(self, kind: str, name: str, message: str, warn: bool = True) -> None:
        """Warn (or inform, ``warn=False``) once per (kind, parameter)."""
        if (kind, name) not in self._noted:
            self._noted.add((kind, name))
            (rank_zero_warn if warn else rank_zero_info)(message)

    @property
    def selected_names(self) -> list[str]:
        """Names of the watched parameters (after ``on_train_start``)."""
        return [n for n, _ in self._selected]

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        owner = type(self).__name__
        sel = select_parameters(pl_module, trainer.optimizers, self.params, self.max_params, owner)
        for msg in sel.warnings:
            rank_zero_warn(msg)
        for msg in sel.infos:
            rank_zero_info(msg)
        self._selected = sel.params
        if self._selected:
            rank_zero_info(
                f"{owner}: every {self.every_n_steps} steps, watching {len(self._selected)} "
                f"parameter(s): {', '.join(self.selected_names)}"
            )
        future = [r for r in self.records if r.step >= trainer.global_step]
        if future:
            self.records = [r for r in self.records if r.step < trainer.global_step]
            rank_zero_info(
                f"{owner}: dropped {len(future)} history record(s) from step "
                f"{trainer.global_step} on (the run resumed from an earlier checkpoint)"
            )

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        if not self._selected:
            return
        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer.optimizer
        batch = trainer.fit_loop.total_batch_idx
        pending = self._pending
        if pending is not None and pending.batch != batch:
            self._release(pending)
            pending = self._pending = None
        if pending is None:
            if (trainer.global_step + 1) % self.every_n_steps != 0:
                return
            pending = _Pending(step_before=trainer.global_step, batch=batch)
        owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
        taken = {id(e.param) for e in pending.entries}
        entries = []
        for name, p in self._selected:
            if id(p) not in owned or id(p) in taken:
                continue
            if p.grad is None:
                self._note(
                    "nograd",
                    name,
                    f"{type(self).__name__}: {name!r} has no gradient at step "
                    f"{trainer.global_step} (unused in the forward pass?); skipped on such steps",
                )
                continue
            before = p.detach().clone() if self._snapshot else None
            entries.append(_Entry(name, p, optimizer, before))
        if entries:
            pending.entries.extend(entries)
            self._prepare(pending, optimizer, entries)
        if pending.entries:
            self._pending = pending

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if trainer.global_step <= pending.step_before:
            self._release(pending)
            return
        step = pending.step_before
        try:
            records = self._measure(trainer, pending, step)
        finally:
            self._release(pending)
        metrics: dict[str, float] = {}
        if trainer.is_global_zero and records:
            self._append(records)
            metrics = {
                self._key(rec, m): v
                for rec in records
                for m, v in rec.metrics().items()
                if math.isfinite(v)
            }
        # every rank logs the same values, so callbacks on every rank see the same metrics
        metrics = trainer.strategy.broadcast(metrics, src=0)
        if metrics:
            self._log_scalars(trainer, metrics, step)
        if trainer.is_global_zero and records:
            self._log_media(trainer, records, step)

    @staticmethod
    def _log_scalars(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        """Into ``trainer.callback_metrics`` (every rank) and every logger (rank zero) at ``step``.

        ``pl_module.log`` is not used: a value it takes on one step stays in Lightning's result
        collection and is written again at every later logging step of the epoch, under the
        wrong step, and it reaches the loggers only on ``log_every_n_steps`` steps.
        """
        trainer.callback_metrics.update(
            {k: torch.tensor(v, dtype=torch.float32) for k, v in metrics.items()}
        )
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    def _append(self, records: list[Any]) -> None:
        self.records.extend(records)
        if self.max_history is not None:
            steps = sorted({r.step for r in self.records})
            if len(steps) > self.max_history:
                cutoff = steps[-self.max_history]
                self.records = [r for r in self.records if r.step >= cutoff]

    def _note_media(self, kind: str, message: str) -> None:
        self._note(kind, "", f"{type(self).__name__}: {message}", warn=False)

    # ------------------------------------------------------------------ notebooks
    def history_rows(self) -> list[dict[str, Any]]:
        """The history as tidy rows ``{step, param, source, metric, value}``.

        ``pandas.DataFrame(monitor.history_rows())`` gives a long-format table.
        """
        from lightning_muon.diagnostics.history import tidy_rows

        return tidy_rows(self.records)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return history_state(self._kind, self._config(), self.records)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        saved = checkpoint.get("callbacks", {})
        older = type(self).__qualname__  # the key of checkpoints written by version 0.1
        if self.state_key not in saved and older in saved:
            self.load_state_dict(saved[older])
        elif self.state_key not in saved:
            rank_zero_info(
                f"{type(self).__name__}: the checkpoint holds no state for this callback "
                "(saved without it); the history starts empty at the resumed step"
            )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        owner = type(self).__name__
        try:
            records = records_from_state({"kind": self._kind, **state_dict})
        except (KeyError, TypeError, ValueError) as err:
            rank_zero_warn(
                f"{owner}: could not restore the history from the checkpoint ({err!r}); "
                "continuing with an empty history"
            )
            return
        saved = state_dict.get("config", {})
        if saved != self._config():
            rank_zero_info(
                f"{owner}: settings changed since the checkpoint (saved {saved}, now "
                f"{self._config()}); keeping the restored history"
            )
        self.records = records
        rank_zero_info(f"{owner}: restored {len(records)} history record(s) from the checkpoint")
