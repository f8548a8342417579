"""Matplotlib figures of diagnostic histories, in the style of the NorMuon paper's Figure 1.

* :func:`plot_row_norms` — per-neuron update norms, one panel per parameter (Figure 1b);
* :func:`plot_spectra` — singular values ``σ_i / σ_1`` per source, one panel per parameter
  (Figure 1a);
* :func:`plot_metric_history` — one metric against the optimizer step, one line per parameter;
* :func:`compare_runs` — two or more finished runs side by side: the spectrum of their updates
  (plus the raw momentum) and their per-neuron norm distributions.

Functions take records (:mod:`lightning_muon.diagnostics.history`) or anything with a
``records`` attribute (the callbacks) and return :class:`matplotlib.figure.Figure` objects built
without ``pyplot``, so they work headless, display in notebooks and never accumulate global state.
Norms are shown divided by their mean and singular values by ``σ_1`` (``normalize=True``), so
optimizers with different learning rates compare on shape, as in the paper.

Example:
    >>> import torch
    >>> from lightning_muon.diagnostics.history import UpdateNormRecord
    >>> g = torch.Generator().manual_seed(0)
    >>> recs = [UpdateNormRecord.from_tensors(
    ...     1, "fc.weight", (8, 4), torch.rand(8, generator=g), torch.ones(8))]
    >>> fig = plot_row_norms(recs)
    >>> len(fig.axes)
    1
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from lightning_muon.diagnostics.history import SOURCES, SpectrumRecord, UpdateNormRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["compare_runs", "plot_metric_history", "plot_row_norms", "plot_spectra"]

Record = UpdateNormRecord | SpectrumRecord

_SOURCE_STYLE = {"update": "-", "momentum": "--", "direction": ":", "weight": "-."}



def _per_param_panels(recs: list, params: Any, step: int | None, nothing: str) -> tuple[Any, list]:
    """A figure of one panel per parameter, and ``(axis, name, records at the step)`` of each
    panel that has records; the other panels (or the only one, without parameters) say so."""
    names = list(params) if params is not None else _params(recs)
    fig, axes = _figure(len(names))
    if not names:
        _empty(axes[0], nothing)
    panels = []
    for ax, name in zip(axes, names, strict=False):
        chosen = _at_step([r for r in recs if r.param == name], step)
        if chosen:
            panels.append((ax, name, chosen))
        else:
            _empty(ax, f"{name}: no record")
    return fig, panels

def _figure(
    n_panels: int, ncols: int | None = None, size: float = 3.2
) -> tuple[Figure, list[Axes]]:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'lightning-muon[plot]'") from err
    n = max(n_panels, 1)
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size * 1.4 * ncols, size * nrows), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    return fig, axes


def _records(obj: Any) -> list[Record]:
    """Records from a monitor, a list of monitors, or a list of records."""
    if hasattr(obj, "records"):
        return list(obj.records)
    out: list[Record] = []
    for item in obj:
        out.extend(_records(item) if hasattr(item, "records") else [item])
    return out


def _params(records: Iterable[Record]) -> list[str]:
    return list(dict.fromkeys(r.param for r in records))


def _at_step(records: Sequence[Record], step: int | None) -> list[Record]:
    """Records of the latest step (``step=None``) or of the latest step ``<= step``."""
    steps = sorted({r.step for r in records if step is None or r.step <= step})
    if not steps:
        return []
    return [r for r in records if r.step == steps[-1]]


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_row_norms(
    ax: Axes, rec: UpdateNormRecord, label: str, normalize: bool, color: str | None = None
) -> None:
    r = rec.row_norms[rec.row_norms.isfinite()].double()
    mean = r.mean().item() if r.numel() else float("nan")
    y = r.sort(descending=True).values
    if normalize and mean > 0:
        y = y / mean
    cv = rec.stats.rows.cv
    ax.plot(range(1, y.numel() + 1), y.numpy(), color=color, label=f"{label} (cv {cv:.3f})")


def _draw_spectrum(
    ax: Axes,
    rec: SpectrumRecord,
    label: str,
    normalize: bool,
    style: str,
    color: str | None = None,
) -> None:
    s = rec.singular_values.double()
    if s.numel() == 0:
        return
    if normalize and s[0] > 0:
        s = s / s[0]
    cond = rec.stats.condition_number
    ax.plot(range(1, s.numel() + 1), s.numpy(), style, color=color, label=f"{label} (κ {cond:.3g})")


def plot_row_norms(
    records: Any,
    step: int | None = None,
    params: Sequence[str] | None = None,
    normalize: bool = True,
) -> Figure:
    """Per-neuron update norms at one step, sorted, one panel per parameter (Figure 1b style).

    Args:
        records: :class:`UpdateNormRecord`\\ s or an ``UpdateNormMonitor``.
        step: show the latest step ``<= step`` (default: the latest recorded step).
        params: parameter names to show (default: all recorded).
        normalize: divide norms by their mean (the spread is then read directly).

    Returns:
        A figure; a panel says so when there is nothing to draw.
    """
    recs = [r for r in _records(records) if isinstance(r, UpdateNormRecord)]
    fig, panels = _per_param_panels(recs, params, step, "no update-norm records yet")
    for ax, name, chosen in panels:
        rec = chosen[0]
        _draw_row_norms(ax, rec, f"step {rec.step}", normalize)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("neuron (sorted by update norm)")
        ax.set_ylabel("‖ΔW_i‖ / mean" if normalize else "‖ΔW_i‖")
        ax.legend(fontsize=8)
    return fig


def plot_spectra(
    records: Any,
    step: int | None = None,
    params: Sequence[str] | None = None,
    sources: Sequence[str] = SOURCES,
    normalize: bool = True,
) -> Figure:
    """Singular values at one step, one panel per parameter, one curve per source (Figure 1a).

    Args:
        records: :class:`SpectrumRecord`\\ s or a ``SpectrumMonitor``.
        step: show the latest step ``<= step`` (default: the latest recorded step).
        params: parameter names to show (default: all recorded).
        sources: which sources to draw.
        normalize: divide by ``σ_1`` so curves of different scale compare on shape.

    Returns:
        A figure with log-scaled y axes.
    """
    recs = [r for r in _records(records) if isinstance(r, SpectrumRecord) and r.source in sources]
    fig, panels = _per_param_panels(recs, params, step, "no spectrum records yet")
    for ax, name, chosen in panels:
        for rec in chosen:
            _draw_spectrum(ax, rec, rec.source, normalize, _SOURCE_STYLE.get(rec.source, "-"))
        ax.set_yscale("log")
        ax.set_title(f"{name} (step {chosen[0].step})", fontsize=9)
        ax.set_xlabel("index i")
        ax.set_ylabel("σ_i / σ_1" if normalize else "σ_i")
        ax.legend(fontsize=8)
    return fig


def plot_metric_history(
    records: Any, metric: str, source: str | None = None, log: bool = False
) -> Figure:
    """One metric (a key of ``record.metrics()``) against the step, one line per parameter.

    The y axis is labelled with the metric; one legend below the panels names the parameters
    (the same colour in every panel), so it never covers the curves.

    Args:
        records: records or a monitor.
        metric: e.g. ``"row_cv"`` or ``"condition_number"``.
        source: for spectrum records, which source (default: all, one panel each).
        log: log-scaled y axis.

    Returns:
        A figure with one panel per source.
    """
    recs = _records(records)
    by_source: dict[str, list[Record]] = {}
    for r in recs:
        src = r.source if isinstance(r, SpectrumRecord) else "update"
        if (source is None or src == source) and metric in r.metrics():
            by_source.setdefault(src, []).append(r)
    fig, axes = _figure(len(by_source))
    if not by_source:
        _empty(axes[0], f"no records with metric {metric!r}")
        return fig
    colours = {name: f"C{i % 10}" for i, name in enumerate(_params(recs))}
    handles: dict[str, Any] = {}
    for ax, (src, rs) in zip(axes, by_source.items(), strict=False):
        for name in _params(rs):
            pts = sorted((r.step, r.metrics()[metric]) for r in rs if r.param == name)
            (line,) = ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker=".", color=colours[name]
            )
            handles.setdefault(name, line)
        if log:
            ax.set_yscale("log")
        ax.set_title(f"{metric} ({src})", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncols=min(len(handles), 2),
        fontsize=7,
        frameon=False,
    )
    return fig


def compare_runs(
    runs: Mapping[str, Any],
    param: str | None = None,
    step: int | None = None,
    normalize: bool = True,
    momentum: bool | str = True,
    layout: Literal["overlay", "columns"] = "overlay",
) -> Figure:
    """Two or more finished runs side by side, as in the NorMuon paper's Figure 1.

    Panel (a): singular values of each run's update ``ΔW`` (and, with ``momentum=True``, of the
    raw momentum of the first run that recorded one). Panel (b): each run's per-neuron update
    norms, sorted. Legends carry the condition number ``κ`` and the coefficient of variation.

    Args:
        runs: label → a monitor, a list of monitors (e.g. ``[UpdateNormMonitor, SpectrumMonitor]``)
            or a list of records. At least two runs.
        param: parameter to compare (default: the first one recorded by every run).
        step: latest step ``<= step`` in each run (default: each run's latest).
        normalize: singular values divided by ``σ_1``, norms by their mean.
        momentum: also draw a raw momentum spectrum (dashed): ``True`` takes it from the first
            run that recorded one (``"columns"``: from every run), a run label from that run,
            ``False`` draws none.
        layout: ``"overlay"`` (two panels, one curve per run) or ``"columns"`` (one column per
            run, shared y axes).

    Returns:
        The figure.

    Raises:
        ValueError: fewer than two runs, an unknown layout, or no parameter common to all runs.
    """
    if len(runs) < 2:
        raise ValueError(f"compare_runs needs at least two runs, got {len(runs)}: {list(runs)}")
    if layout not in ("overlay", "columns"):
        raise ValueError(f"layout must be 'overlay' or 'columns', got {layout!r}")
    recs = {label: _records(obj) for label, obj in runs.items()}
    common = [set(_params(rs)) for rs in recs.values()]
    shared = set.intersection(*common)
    if param is None:
        order = _params(next(iter(recs.values())))
        candidates = [p for p in order if p in shared]
        if not candidates:
            raise ValueError(
                f"no parameter was recorded by every run; per run: "
                f"{ {k: sorted(v) for k, v in zip(recs, common, strict=True)} }"
            )
        param = candidates[0]
    elif param not in shared:
        raise ValueError(
            f"parameter {param!r} is not recorded by every run; shared: {sorted(shared)}"
        )

    if layout == "overlay":
        fig, axes = _figure(2, ncols=2, size=3.6)
        spec_axes, norm_axes = [axes[0]] * len(recs), [axes[1]] * len(recs)
    else:
        try:
            from matplotlib.figure import Figure
        except ImportError as err:  # pragma: no cover
            raise ImportError(
                "plotting needs matplotlib: pip install 'lightning-muon[plot]'"
            ) from err
        n = len(recs)
        fig = Figure(figsize=(3.6 * n, 6.4), layout="constrained")
        grid = fig.subplots(2, n, sharey="row", squeeze=False)
        spec_axes, norm_axes = list(grid[0]), list(grid[1])

    if isinstance(momentum, str) and momentum not in recs:
        raise ValueError(f"momentum={momentum!r} is not one of the runs {list(recs)}")
    momentum_drawn = momentum is False
    for i, ((label, rs), ax_s, ax_n) in enumerate(
        zip(recs.items(), spec_axes, norm_axes, strict=True)
    ):
        color = f"C{i}"  # one colour per run in both panels; the momentum is grey
        mine = [r for r in rs if r.param == param]
        spec = _at_step([r for r in mine if isinstance(r, SpectrumRecord)], step)
        for rec in spec:
            if rec.source == "update":
                _draw_spectrum(ax_s, rec, label, normalize, "-", color)
            elif (
                rec.source == "momentum"
                and not momentum_drawn
                and (not isinstance(momentum, str) or momentum == label)
            ):
                _draw_spectrum(ax_s, rec, f"momentum ({label})", normalize, "--", "0.45")
                momentum_drawn = layout == "overlay"
        norms = _at_step([r for r in mine if isinstance(r, UpdateNormRecord)], step)
        if norms:
            _draw_row_norms(ax_n, norms[0], label, normalize, color)
        if layout == "columns":
            ax_s.set_title(label, fontsize=10)
    for ax in dict.fromkeys(spec_axes):
        ax.set_yscale("log")
        ax.set_xlabel("index i")
        ax.set_ylabel("σ_i / σ_1" if normalize else "σ_i")
        ax.legend(fontsize=8)
    for ax in dict.fromkeys(norm_axes):
        ax.set_xlabel("neuron (sorted by update norm)")
        ax.set_ylabel("‖ΔW_i‖ / mean" if normalize else "‖ΔW_i‖")
        ax.legend(fontsize=8)
    if layout == "overlay":
        spec_axes[0].set_title("(a) singular values of the update", fontsize=10)
        norm_axes[0].set_title("(b) per-neuron update norms", fontsize=10)
    fig.suptitle(param, fontsize=10)
    return fig
