"""Figures from histories: one panel per parameter, Figure-1 comparisons, headless rendering."""

from __future__ import annotations

import io

import pytest
import torch

from lightning_muon.callbacks import UpdateNormMonitor, compare_runs
from lightning_muon.diagnostics import (
    SpectrumRecord,
    UpdateNormRecord,
    plot_metric_history,
    plot_row_norms,
    plot_spectra,
    row_norms,
    tidy_rows,
)


def _run(
    seed: int, steps: tuple[int, ...] = (10, 20), params: tuple[str, ...] = ("a.w", "b.w")
) -> list:
    g = torch.Generator().manual_seed(seed)
    records: list = []
    for step in steps:
        for name in params:
            delta, w = torch.randn(12, 6, generator=g), torch.randn(12, 6, generator=g)
            records.append(
                UpdateNormRecord.from_tensors(step, name, (12, 6), row_norms(delta), row_norms(w))
            )
            for source in ("update", "momentum", "weight"):
                sv = torch.linalg.svdvals(torch.randn(12, 6, generator=g))
                records.append(SpectrumRecord.from_singular_values(step, name, source, (12, 6), sv))
    return records


def _renders(fig) -> bool:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue().startswith(b"\x89PNG")


def test_panels_per_parameter_and_step_choice() -> None:
    recs = _run(0)
    fig = plot_row_norms(recs)
    assert len(fig.axes) == 2 and _renders(fig)
    fig = plot_spectra(recs, step=15, sources=("update", "momentum"))
    ax = fig.axes[0]
    assert "step 10" in ax.get_title() and len(ax.get_lines()) == 2
    assert ax.get_yscale() == "log" and _renders(fig)
    line = ax.get_lines()[0].get_ydata()
    assert line[0] == pytest.approx(1.0) and all(line[:-1] >= line[1:])  # σ_i/σ_1, descending


def test_normalized_norms_have_unit_mean() -> None:
    recs = [r for r in _run(1) if isinstance(r, UpdateNormRecord)]
    y = plot_row_norms(recs, params=["a.w"]).axes[0].get_lines()[0].get_ydata()
    assert y.mean() == pytest.approx(1.0) and all(y[:-1] >= y[1:])


def test_metric_history_and_empty_inputs() -> None:
    recs = _run(2)
    fig = plot_metric_history(recs, "condition_number", log=True)
    assert len(fig.axes) == 3  # update, momentum, weight
    assert [len(line.get_xdata()) for line in fig.axes[0].get_lines()] == [2, 2]
    assert len(plot_row_norms([]).axes) == 1 and len(UpdateNormMonitor().plot().axes) == 1
    assert len(plot_metric_history(recs, "no_such_metric").axes) == 1


def test_compare_runs_layouts() -> None:
    runs = {"AdamW": _run(3), "Muon": _run(4), "NorMuon": _run(5)}
    fig = compare_runs(runs, param="b.w")
    spec, norms = fig.axes
    assert len(spec.get_lines()) == 4  # three updates + one raw momentum
    assert len(norms.get_lines()) == 3
    assert [t.get_text().split(" (")[0] for t in norms.get_legend().get_texts()] == list(runs)
    colors = {line.get_label().split(" (")[0]: line.get_color() for line in spec.get_lines()}
    assert colors == {
        **{line.get_label().split(" (")[0]: line.get_color() for line in norms.get_lines()},
        "momentum": "0.45",
    }
    assert _renders(fig)
    fig = compare_runs(runs, momentum="Muon")
    assert [t.get_text().split(" (")[0] for t in fig.axes[0].get_legend().get_texts()] == [
        "AdamW",
        "Muon",
        "momentum",
        "NorMuon",
    ]
    fig = compare_runs(runs, layout="columns", momentum=False)
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "AdamW"


def test_compare_runs_errors() -> None:
    with pytest.raises(ValueError, match="at least two runs, got 1"):
        compare_runs({"only": _run(0)})
    with pytest.raises(ValueError, match="'zzz' is not recorded by every run"):
        compare_runs({"x": _run(0), "y": _run(1)}, param="zzz")
    with pytest.raises(ValueError, match="no parameter was recorded by every run"):
        compare_runs({"x": _run(0, params=("a.w",)), "y": _run(1, params=("b.w",))})
    with pytest.raises(ValueError, match="momentum='z' is not one of the runs"):
        compare_runs({"x": _run(0), "y": _run(1)}, momentum="z")
    with pytest.raises(ValueError, match="layout must be"):
        compare_runs({"x": _run(0), "y": _run(1)}, layout="grid")  # type: ignore[arg-type]


def test_tidy_rows_and_state_round_trip() -> None:
    recs = _run(6, steps=(5,), params=("a.w",))
    rows = tidy_rows(recs)
    assert {r["metric"] for r in rows if r["source"] == "update"} >= {"row_cv", "condition_number"}
    for rec in recs:
        assert type(rec).from_state(rec.to_state()) == rec


def test_history_plot_labels_its_axis_and_keeps_the_legend_off_the_data() -> None:
    recs = _run(3, steps=(10, 20, 30), params=("model.a.weight", "model.b.weight", "model.c.w"))
    fig = plot_metric_history(recs, "condition_number", log=True)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out
    renderer = canvas.get_renderer()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "model.a.weight",
        "model.b.weight",
        "model.c.w",
    ]
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert ax.get_ylabel() == "condition_number" and ax.get_xlabel() == "step"
        assert ax.get_legend() is None
        assert not box.overlaps(ax.get_window_extent(renderer))
        # each parameter has the same colour in every panel
        assert [line.get_color() for line in ax.get_lines()] == ["C0", "C1", "C2"]


def _summary_and_runs() -> tuple[dict, list[dict]]:
    """An efficiency summary where two optimizers end far below the AdamW target."""
    steps = list(range(0, 401, 50))
    finals = {"adamw": 1.60, "muon": 1.05, "normuon": 1.00}
    runs, table = [], []
    for name, final in finals.items():
        losses = [final + (5.5 - final) * 0.5 ** (s / 40) for s in steps]
        runs.append(
            {
                "optimizer": name,
                "lr": 0.01,
                "final_val_loss": losses[-1],
                "eval_steps": steps,
                "val_losses": losses,
            }
        )
        table.append({"optimizer": name, "lr": 0.01})
    summary = {"target_mean": finals["adamw"], "table": table, "config": {"train": {"steps": 400}}}
    return summary, runs


def test_efficiency_zoom_holds_every_curve_and_has_a_legend(tmp_path) -> None:
    from lightning_muon.benchmarks.efficiency_report import curves_figure, plot_curves

    summary, runs = _summary_and_runs()
    fig = curves_figure(summary, runs)
    full, zoom = fig.axes
    lo, hi = zoom.get_ylim()
    x0, x1 = zoom.get_xlim()
    for line in zoom.get_lines()[:3]:
        xs, ys = line.get_xdata(), line.get_ydata()
        shown = [y for x, y in zip(xs, ys) if x0 <= x <= x1]
        assert shown and lo <= min(shown) and max(shown) <= hi, line.get_label()
    labels = [t.get_text() for t in zoom.get_legend().get_texts()]
    assert labels == ["adamw (lr 0.01)", "muon (lr 0.01)", "normuon (lr 0.01)"]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legend_box = zoom.get_legend().get_window_extent(renderer)
    assert not legend_box.overlaps(zoom.get_window_extent(renderer))  # beside the zoom's data
    assert full.get_legend() is not None
    plot_curves(summary, runs, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")
