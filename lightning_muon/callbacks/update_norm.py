"""``UpdateNormMonitor``: per-neuron update norms, update RMS and update-to-weight ratio."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl

from lightning_muon.callbacks._base import DiagnosticMonitor, _Pending
from lightning_muon.callbacks._media import log_histogram
from lightning_muon.diagnostics.distributed import gathered_row_norms
from lightning_muon.diagnostics.history import UpdateNormRecord
from lightning_muon.diagnostics.plotting import plot_metric_history, plot_row_norms

__all__ = ["UpdateNormMonitor"]


class UpdateNormMonitor(DiagnosticMonitor):
    r"""Log how evenly an optimizer step moves the neurons (output rows) of weight matrices.

    On every ``every_n_steps``-th optimizer step the applied update ``ΔW = W_after − W_before``
    of each watched parameter (viewed as ``(out, in·…)``) is measured: the norm of every row
    ``r_i = ‖ΔW_{i,:}‖_2``, their mean, population std, coefficient of variation
    ``cv = std/mean`` and ``min/max`` ratio (Figure 1b of the NorMuon paper: Muon's updates
    have a high ``cv``, AdamW's and NorMuon's a low one), the update RMS
    ``‖ΔW‖_F/\sqrt{mn}`` and the update-to-weight ratio ``‖ΔW‖_F/‖W_before‖_F``.

    Works with any optimizer. Under FSDP2 (``Shard(0)`` ``DTensor`` parameters) each rank
    measures its own rows and only the row norms are gathered. See
    :mod:`lightning_muon.callbacks._base` for when things run.

    Logged keys (``<param>`` is the parameter name from ``named_parameters()``, e.g.
    ``model.transformer.h.0.mlp.fc.weight``):

    * ``update_norm/<param>/row_mean``
    * ``update_norm/<param>/row_std``
    * ``update_norm/<param>/row_cv``
    * ``update_norm/<param>/row_min_max_ratio``
    * ``update_norm/<param>/rms``
    * ``update_norm/<param>/update_to_weight``

    With ``log_histograms=True``, also the histogram ``update_norm/<param>/row_norms`` of the
    ``r_i`` (TensorBoard and W&B loggers). Values that are undefined at a step
    (e.g. ``cv`` of an all-zero update) are not logged that step; :attr:`records` keeps them.

    Args:
        every_n_steps: measure the optimizer steps with index ``s`` (``trainer.global_step``
            before the step, the ``step`` loggers show) where ``s + 1`` is a multiple of this.
        params: ``fnmatch`` glob(s) on parameter names; ``None`` for the optimizer's ``"muon"``
            branch, else the hidden matrices that branch would take (no embeddings, output head,
            norms or biases).
        max_params: watch at most this many parameters, spread over depth (``None``: no cap).
        log_histograms: send the row norms as a histogram to loggers that support it.
        max_history: keep this many most recent due steps in :attr:`records` (``None``: all).

    Example:
        >>> import lightning.pytorch as pl
        >>> monitor = UpdateNormMonitor(every_n_steps=10, params=["*.mlp.*"])
        >>> # pl.Trainer(callbacks=[monitor]).fit(model); then monitor.plot() in a notebook
        >>> monitor.every_n_steps
        10
    """

    _kind = "update_norm"

    def __init__(
        self,
        every_n_steps: int = 50,
        params: str | list[str] | None = None,
        max_params: int | None = 8,
        log_histograms: bool = True,
        max_history: int | None = 100,
    ) -> None:
        super().__init__(every_n_steps, params, max_params, max_history)
        self.log_histograms = log_histograms

    def _key(self, record: Any, metric: str) -> str:
        return f"update_norm/{record.param}/{metric}"

    def _measure(self, trainer: pl.Trainer, pending: _Pending, step: int) -> list[Any]:
        records = []
        for e in pending.entries:
            assert e.before is not None
            delta = e.param.detach().float() - e.before.float()
            delta_rows = gathered_row_norms(delta)
            weight_rows = gathered_row_norms(e.before)
            if not trainer.is_global_zero:
                continue
            rec = UpdateNormRecord.from_tensors(
                step, e.name, tuple(e.param.shape), delta_rows, weight_rows
            )
            bad = rec.stats.rows.num_nonfinite
            if bad:
                self._note(
                    "nonfinite",
                    e.name,
                    f"UpdateNormMonitor: {bad} of {rec.stats.rows.num_rows} rows of the update of "
                    f"{e.name!r} are non-finite at step {step}; they are left out of the row "
                    "statistics, and rms/update_to_weight are not logged (reported once per parameter)",
                )
            records.append(rec)
        return records

    def _log_media(self, trainer: pl.Trainer, records: list[Any], step: int) -> None:
        if not self.log_histograms:
            return
        for rec in records:
            values = rec.row_norms[rec.row_norms.isfinite()]
            if values.numel():
                key = f"update_norm/{rec.param}/row_norms"
                log_histogram(trainer.loggers, key, values, step, self._note_media)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "log_histograms": self.log_histograms}

    def plot(
        self,
        kind: Literal["distribution", "history"] = "distribution",
        step: int | None = None,
        params: list[str] | None = None,
        metric: str = "row_cv",
    ) -> Any:
        """A matplotlib figure of the recorded history.

        Args:
            kind: ``"distribution"``: sorted per-neuron norms at one step, one panel per parameter
                (NorMuon Figure 1b); ``"history"``: ``metric`` against the step.
            step: for ``"distribution"``, the latest recorded step ``<= step`` (default: latest).
            params: parameters to draw (default: all recorded).
            metric: for ``"history"``, one of the logged metric names (e.g. ``"update_to_weight"``).

        Returns:
            ``matplotlib.figure.Figure``.
        """
        if kind == "distribution":
            return plot_row_norms(self.records, step=step, params=params)
        if kind == "history":
            recs = [r for r in self.records if params is None or r.param in params]
            return plot_metric_history(recs, metric)
        raise ValueError(f"kind must be 'distribution' or 'history', got {kind!r}")
