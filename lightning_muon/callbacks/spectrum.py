"""``SpectrumMonitor``: singular-value spectra of updates, momenta, directions and weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.optim import Optimizer

from lightning_muon.callbacks._base import DiagnosticMonitor, _Entry, _Pending
from lightning_muon.callbacks._media import log_histogram, log_image
from lightning_muon.diagnostics.distributed import full_tensor, full_tensor_like
from lightning_muon.diagnostics.history import SOURCES, SpectrumRecord
from lightning_muon.diagnostics.plotting import plot_metric_history, plot_spectra
from lightning_muon.diagnostics.spectrum import spectrum_stats

__all__ = ["SpectrumMonitor"]

_MOMENTUM_KEYS = ("momentum_buffer", "exp_avg")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class SpectrumMonitor(DiagnosticMonitor):
    r"""Log the singular-value spectra of what the optimizer does to weight matrices.

    On every ``every_n_steps``-th optimizer step, for each watched parameter (viewed as
    ``(out, in·…)``), the singular values ``σ_1 ≥ … ≥ σ_r`` of up to four *sources*:

    * ``update``: the applied update ``ΔW = W_after − W_before``;
    * ``momentum``: the optimizer's first moment after the step,
      ``optimizer.state[p]["momentum_buffer"]`` (Muon family, SGD) or ``["exp_avg"]`` (Adam);
    * ``direction``: the orthogonalized direction ``O`` (after Newton–Schulz, before row
      normalisation and lr scaling), for optimizers with ``capture_directions`` (the
      ``lightning_muon`` optimizers); requested only on due steps;
    * ``weight``: the weights after the step.

    and their summary (definitions in :mod:`lightning_muon.diagnostics.spectrum`): top-k values,
    smallest value, condition number ``σ_1/σ_r``, stable rank ``Σσ_i²/σ_1²``, effective rank
    (Roy–Vetterli), and for ``direction`` the orthogonality error
    ``sqrt(mean (σ_i − 1)²) = ‖O − UVᵀ‖_F/√r`` (distance to the nearest semi-orthogonal matrix).
    Sources the optimizer does not expose are skipped with a one-time message (``torch.optim.AdamW``
    gives ``update``, ``momentum`` and ``weight``).

    A full SVD costs ``O(mn·min(m, n))``; that is why the default interval is long. Under FSDP2
    the sharded matrices are gathered (``DTensor.full_tensor()``) only on due steps and
    decomposed on global rank zero only.

    Logged keys (``<source>`` ∈ ``update, momentum, direction, weight``; ``<param>`` the
    parameter name; ``k = 1 … top_k``):

    * ``spectrum/<source>/<param>/sigma_<k>``
    * ``spectrum/<source>/<param>/sigma_min``
    * ``spectrum/<source>/<param>/condition_number``
    * ``spectrum/<source>/<param>/stable_rank``
    * ``spectrum/<source>/<param>/effective_rank``
    * ``spectrum/direction/<param>/orthogonality_error``

    Histograms ``spectrum/<source>/<param>/singular_values`` (``log_histograms``; TensorBoard,
    W&B) and, on every measured step (or every ``image_every_n_steps``), the figure
    ``spectrum/singular_values`` (``log_images``; TensorBoard, W&B, MLflow). Undefined values
    (e.g. the condition number of a singular matrix) are not logged that step; :attr:`records`
    keeps them.

    Args:
        every_n_steps: measure the optimizer steps with index ``s`` (``trainer.global_step``
            before the step, the ``step`` loggers show) where ``s + 1`` is a multiple of this.
        params: ``fnmatch`` glob(s) on parameter names; ``None`` for the optimizer's ``"muon"``
            branch, else the hidden matrices that branch would take (no embeddings, output head,
            norms or biases).
        max_params: watch at most this many parameters, spread over depth (``None``: no cap).
        sources: which of ``update, momentum, direction, weight`` to decompose.
        top_k: number of largest singular values logged as ``sigma_1 … sigma_k``.
        log_histograms: singular values as histograms where the logger supports them.
        log_images: spectrum figures where the logger supports them (needs matplotlib).
        image_every_n_steps: interval of the figures, a multiple of ``every_n_steps``
            (default: ``every_n_steps``, a figure per measurement).
        compute_dtype: ``"float32"`` or ``"float64"`` for the SVD.
        max_history: keep this many most recent due steps in :attr:`records` (``None``: all).

    Example:
        >>> monitor = SpectrumMonitor(every_n_steps=100, sources=["update", "momentum"])
        >>> monitor.sources
        ('update', 'momentum')
    """

    _kind = "spectrum"

    def __init__(
        self,
        every_n_steps: int = 100,
        params: str | list[str] | None = None,
        max_params: int | None = 4,
        sources: Sequence[str] = SOURCES,
        top_k: int = 3,
        log_histograms: bool = True,
        log_images: bool = True,
        image_every_n_steps: int | None = None,
        compute_dtype: str = "float32",
        max_history: int | None = 100,
    ) -> None:
        super().__init__(every_n_steps, params, max_params, max_history)
        if isinstance(sources, str):
            sources = [sources]
        unknown = [s for s in sources if s not in SOURCES]
        if unknown or not sources:
            raise ValueError(f"sources must be a non-empty subset of {SOURCES}, got {sources!r}")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
            raise ValueError(f"top_k must be an int >= 0, got {top_k!r}")
        image_every = image_every_n_steps or every_n_steps
        if not isinstance(image_every, int) or image_every % every_n_steps != 0:
            raise ValueError(
                f"image_every_n_steps must be a multiple of every_n_steps={every_n_steps}, "
                f"got {image_every_n_steps!r}"
            )
        if compute_dtype not in _DTYPES:
            raise ValueError(f"compute_dtype must be one of {list(_DTYPES)}, got {compute_dtype!r}")
        self.sources = tuple(dict.fromkeys(sources))
        self.top_k = top_k
        self.log_histograms = log_histograms
        self.log_images = log_images
        self.image_every_n_steps = image_every
        self.compute_dtype = compute_dtype
        self._snapshot = "update" in self.sources

    def _key(self, record: Any, metric: str) -> str:
        return f"spectrum/{record.source}/{record.param}/{metric}"

    def _prepare(self, pending: _Pending, optimizer: Optimizer, entries: list[_Entry]) -> None:
        if "direction" not in self.sources:
            return
        capture = getattr(optimizer, "capture_directions", None)
        if callable(capture):
            capture([e.param for e in pending.entries if e.optimizer is optimizer])
            if optimizer not in pending.capturing:
                pending.capturing.append(optimizer)
        else:
            self._note(
                "nodirection",
                type(optimizer).__name__,
                f"SpectrumMonitor: {type(optimizer).__name__} does not expose its orthogonalized "
                "direction (no `capture_directions`); 'direction' spectra are skipped",
                warn=False,
            )

    def _release(self, pending: _Pending) -> None:
        for optimizer in pending.capturing:
            optimizer.capture_directions([])  # type: ignore[attr-defined]
        pending.capturing.clear()

    def _sources_of(self, e: _Entry, pending: _Pending) -> list[tuple[str, Tensor]]:
        """The matrices to decompose for one parameter (gathers DTensors: a collective)."""
        out: list[tuple[str, Tensor]] = []
        for source in self.sources:
            if source == "update":
                assert e.before is not None
                out.append((source, full_tensor(e.param.detach().float() - e.before.float())))
            elif source == "momentum":
                state = e.optimizer.state.get(e.param, {})
                buf = next((state[k] for k in _MOMENTUM_KEYS if k in state), None)
                if isinstance(buf, Tensor):
                    out.append((source, full_tensor_like(buf.detach(), e.param)))
                else:
                    self._note(
                        "nomomentum",
                        e.name,
                        f"SpectrumMonitor: {type(e.optimizer).__name__} keeps no momentum for "
                        f"{e.name!r} (state keys: {sorted(state)}; looked for "
                        f"{list(_MOMENTUM_KEYS)}); 'momentum' spectra are skipped",
                        warn=False,
                    )
            elif source == "direction" and e.optimizer in pending.capturing:
                captured = getattr(e.optimizer, "captured_directions", None) or {}
                d = captured.get(e.param)
                if isinstance(d, Tensor):
                    out.append((source, full_tensor_like(d.detach(), e.param)))
                else:
                    self._note(
                        "nocapture",
                        e.name,
                        f"SpectrumMonitor: the optimizer captured no direction for {e.name!r}; "
                        "'direction' spectra are skipped for it",
                    )
            elif source == "weight":
                out.append((source, full_tensor(e.param.detach())))
        return out

    def _measure(self, trainer: pl.Trainer, pending: _Pending, step: int) -> list[Any]:
        records = []
        dtype = _DTYPES[self.compute_dtype]
        for e in pending.entries:
            mats = self._sources_of(e, pending)
            if not trainer.is_global_zero:
                continue
            for source, mat in mats:
                if mat.numel() != e.param.numel():
                    self._note(
                        f"shape-{source}",
                        e.name,
                        f"SpectrumMonitor: the {source} of {e.name!r} has shape "
                        f"{tuple(mat.shape)}, not that of the parameter {tuple(e.param.shape)}; skipped",
                    )
                    continue
                stats, sv = spectrum_stats(mat.reshape(e.param.shape), self.top_k, dtype)
                if stats.num_nonfinite:
                    self._note(
                        f"nonfinite-{source}",
                        e.name,
                        f"SpectrumMonitor: the {source} of {e.name!r} has {stats.num_nonfinite} "
                        f"non-finite entries at step {step}; its spectrum is skipped "
                        "(reported once per parameter and source)",
                    )
                    continue
                records.append(
                    SpectrumRecord(
                        step, e.name, source, stats.shape, sv.float().cpu(), stats, self.top_k
                    )
                )
        return records

    def _log_media(self, trainer: pl.Trainer, records: list[Any], step: int) -> None:
        if self.log_histograms:
            for rec in records:
                if rec.singular_values.numel():
                    key = f"spectrum/{rec.source}/{rec.param}/singular_values"
                    log_histogram(trainer.loggers, key, rec.singular_values, step, self._note_media)
        if not (self.log_images and trainer.loggers and records):
            return
        if (step + 1) % self.image_every_n_steps != 0:
            return
        try:
            fig = plot_spectra(records)
        except ImportError as err:
            self._note("noplot", "", f"SpectrumMonitor: no spectrum images ({err})")
            return
        log_image(trainer.loggers, "spectrum/singular_values", fig, step, self._note_media)

    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "sources": list(self.sources)}

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(),
            "sources": list(self.sources),
            "top_k": self.top_k,
            "compute_dtype": self.compute_dtype,
        }

    def plot(
        self,
        kind: Literal["spectrum", "history"] = "spectrum",
        step: int | None = None,
        params: list[str] | None = None,
        sources: Sequence[str] | None = None,
        metric: str = "condition_number",
    ) -> Any:
        """A matplotlib figure of the recorded history.

        Args:
            kind: ``"spectrum"``: ``σ_i/σ_1`` at one step, one panel per parameter, one curve per
                source (NorMuon Figure 1a); ``"history"``: ``metric`` against the step, one panel
                per source.
            step: for ``"spectrum"``, the latest recorded step ``<= step`` (default: latest).
            params: parameters to draw (default: all recorded).
            sources: sources to draw (default: all recorded).
            metric: for ``"history"``, a logged metric name (e.g. ``"stable_rank"``).

        Returns:
            ``matplotlib.figure.Figure``.
        """
        chosen = tuple(sources) if sources is not None else self.sources
        if kind == "spectrum":
            return plot_spectra(self.records, step=step, params=params, sources=chosen)
        if kind == "history":
            recs = [
                r
                for r in self.records
                if (params is None or r.param in params) and r.source in chosen
            ]
            return plot_metric_history(recs, metric, log=metric == "condition_number")
        raise ValueError(f"kind must be 'spectrum' or 'history', got {kind!r}")
