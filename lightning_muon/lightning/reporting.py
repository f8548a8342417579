"""What a training run tells its user: a progress bar that counts the run's steps, and a summary.

:class:`StepProgressBar` is a ``TQDMProgressBar`` for runs bounded by ``max_steps``: it shows
``step k/max_steps`` of the whole run, across epochs and after a resume (Lightning's own bars count
batches of the current epoch against ``max_epochs − 1``, which reads ``Epoch 0/-2`` when only
``max_steps`` is set). Epoch-bounded runs keep Lightning's display.

:func:`run_summary` turns a finished ``Trainer`` into the lines the ``lightning-muon`` command prints
at the end of ``fit``: where ``metrics.csv``, the configuration, the checkpoints and the TensorBoard
events are, the command that opens TensorBoard, the command that extends the run, and the final
validation loss in nats and in bits per byte (``bpb = val_loss / ln 2``).

Example:
    >>> import lightning.pytorch as pl
    >>> print(run_summary(pl.Trainer(logger=False, enable_checkpointing=False)))
    lightning-muon: fit stopped after 0 optimizer steps.
      logs:        none (trainer.logger=false)
      checkpoints: none (checkpointing is off)
      val_loss:    not measured (no validation ran in this fit; `lightning-muon validate --ckpt_path CKPT` measures it)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger


class StepProgressBar(TQDMProgressBar):
    """A TQDM bar over the run's optimizer steps (``k/max_steps``) when ``max_steps`` bounds it."""

    @staticmethod
    def _by_steps(trainer: Any) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def on_train_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        if self._by_steps(trainer):  # a run resumed mid-epoch gets no on_train_epoch_start
            self.on_train_epoch_start(trainer, *args)

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        if not self._by_steps(trainer):
            super().on_train_epoch_start(trainer, *args)
            return
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.n = min(trainer.global_step, trainer.max_steps)
        bar.set_description(f"Training (epoch {trainer.current_epoch})")
        bar.refresh()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        if not self._by_steps(trainer):
            super().on_train_batch_end(trainer, pl_module, *args)
            return
        bar = self.train_progress_bar
        step = min(trainer.global_step, trainer.max_steps)
        if bar is not None and (step == trainer.max_steps or self._should_update(step, bar.total)):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()


def _metric(trainer: Any, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


def run_summary(trainer: Any) -> str:
    """The end-of-``fit`` summary of ``trainer``'s run (see the module docstring)."""
    lines = [f"lightning-muon: fit stopped after {trainer.global_step} optimizer steps."]
    csv = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    board = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if csv is not None:
        run = Path(csv.log_dir)
        lines.append(f"  metrics:     {run / 'metrics.csv'}")
        if (run / "config.yaml").exists():
            lines.append(f"  config:      {run / 'config.yaml'}")
    elif trainer.loggers:
        lines.append(f"  logs:        {trainer.log_dir}")
    else:
        lines.append("  logs:        none (trainer.logger=false)")
    if board is not None:
        lines.append(
            f"  plots:       TensorBoard (scalars, histograms, spectrum images) in {board.log_dir}"
        )
        lines.append(f"               tensorboard --logdir {Path(board.log_dir).parent}")
    lines += _checkpoint_lines(trainer)
    val_loss = _metric(trainer, "val_loss")
    if val_loss is None:
        lines.append(
            "  val_loss:    not measured (no validation ran in this fit; "
            "`lightning-muon validate --ckpt_path CKPT` measures it)"
        )
    else:
        bpb = _metric(trainer, "val_bpb") or val_loss / math.log(2)
        lines.append(
            f"  val_loss:    {val_loss:.4f} nats per byte = {bpb:.4f} bits per byte "
            f"(perplexity {math.exp(val_loss):.3f}), at step {trainer.global_step}"
        )
    return "\n".join(lines)


def _checkpoint_lines(trainer: Any) -> list[str]:
    checkpoints = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    if not checkpoints:
        return ["  checkpoints: none (checkpointing is off)"]
    lines = []
    for callback in checkpoints:
        if callback.best_model_path:
            score = callback.best_model_score
            what = f" ({callback.monitor}={float(score):.4f})" if score is not None else ""
            lines.append(f"  best:        {callback.best_model_path}{what}")
        if callback.last_model_path:
            lines.append(f"  last:        {callback.last_model_path}")
            lines.append(
                "  extend:      add --trainer.max_steps N --ckpt_path "
                f"{callback.last_model_path} to the same command (the schedule stretches to N)"
            )
    return lines or [f"  checkpoints: {checkpoints[0].dirpath} (none written yet)"]
