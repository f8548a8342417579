"""The papers' training-efficiency metric, and the tables and plot of the efficiency benchmark.

The metric (AdaMuon, NorMuon and Muon-NSR/VS papers): the number of steps an optimizer needs to
reach the baseline's *final* validation loss ``L*``, as a fraction of the baseline's steps. With a
validation curve ``(s_i, L_i)`` evaluated every few steps, the crossing is interpolated linearly
between the last evaluation above ``L*`` and the first at or below it:

.. math::

    s^* = s_{j-1} + (s_j - s_{j-1}) \\frac{L_{j-1} - L^*}{L_{j-1} - L_j},
    \\qquad j = \\min\\{i : L_i \\le L^*\\}, \\qquad \\text{fraction} = s^* / S_{\\text{baseline}}

Example:
    >>> steps_to_reach([0, 10, 20], [5.0, 3.0, 1.0], target=2.0)
    15.0
    >>> steps_to_reach([0, 10], [5.0, 3.0], target=2.0) is None
    True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def steps_to_reach(steps: Sequence[int], losses: Sequence[float], target: float) -> float | None:
    """First (interpolated) step at which the curve reaches ``target``; ``None`` if it never does."""
    if len(steps) != len(losses):
        raise ValueError(f"{len(steps)} steps for {len(losses)} losses")
    for i, loss in enumerate(losses):
        if loss <= target:
            if i == 0:
                return float(steps[0])
            prev = losses[i - 1]
            frac = (prev - target) / (prev - loss) if prev > loss else 1.0
            return steps[i - 1] + (steps[i] - steps[i - 1]) * frac
    return None


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, minimum and maximum of ``values`` (NaN-free input)."""
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def _fmt_spread(s: dict[str, float] | None, pct: bool = False, digits: int = 3) -> str:
    if s is None:
        return "not reached"
    scale, unit = (100.0, "%") if pct else (1.0, "")
    mean, lo, hi = s["mean"] * scale, s["min"] * scale, s["max"] * scale
    d = 0 if pct else digits
    if math.isclose(lo, hi):
        return f"{mean:.{d}f}{unit}"
    return f"{mean:.{d}f}{unit} [{lo:.{d}f}–{hi:.{d}f}]"


def _row(
    label: str, jobs: list[tuple], lookup, targets: dict[int, float], steps: int
) -> dict[str, Any]:
    """One table row: the runs of ``jobs`` (same configuration, one per seed) against the targets."""
    runs = [run for run in lookup(jobs) if run["seed"] in targets]
    if not runs:  # none trained yet (a report of a partial cache)
        return None
    name, lr, _, kwargs = jobs[0]
    per_seed = {}
    for run in runs:
        reached = None
        if not run["diverged"]:
            at = steps_to_reach(run["eval_steps"], run["val_losses"], targets[run["seed"]])
            reached = None if at is None else at / steps
        per_seed[run["seed"]] = {"final_val_loss": run["final_val_loss"], "fraction": reached}
    fractions = [v["fraction"] for v in per_seed.values() if v["fraction"] is not None]
    finals = [v["final_val_loss"] for v in per_seed.values()]
    ratio = kwargs.get("adamw_lr_ratio")
    return {
        "label": label,
        "optimizer": name,
        "lr": lr,
        "adamw_lr": None if ratio is None else lr * ratio,
        "kwargs": kwargs,
        "seeds": sorted(per_seed),
        "per_seed": per_seed,
        "fraction": spread(fractions) if fractions else None,
        "reached_seeds": len(fractions),
        "final_val_loss": spread(finals) if all(map(math.isfinite, finals)) else None,
        "step_time_ms": 1e3 * statistics.median(run["step_time_s"] for run in runs),
    }


def summarize(grids, found, plan, lookup, config, step_times=None) -> dict[str, Any]:
    """The benchmark's results: grids, tuned rows over seeds, defaults rows, the ablation.

    ``found`` maps a grid label to ``{(i, j): run}``; ``plan`` maps a section to ``(row label,
    job)`` pairs (see :func:`lightning_muon.benchmarks.efficiency.plan_after_grid`); ``lookup``
    returns the runs of jobs. ``step_times`` (seconds, interleaved measurement, by row label)
    replaces the per-run median step times."""
    from .efficiency_grid import best_cell, on_edge

    steps = config["train"]["steps"]
    adamw_rows = [job for label, job in plan["tuned"] if label == "adamw"]
    targets = {run["seed"]: run["final_val_loss"] for run in lookup(adamw_rows)}
    first = config["seeds"][0]
    sections: dict[str, list[dict[str, Any]]] = {}
    for section, pairs in plan.items():
        by_label: dict[str, list[tuple]] = {}
        for label, job in pairs:
            by_label.setdefault(label, []).append(job)
        rows = [_row(lb, jobs, lookup, targets, steps) for lb, jobs in by_label.items()]
        sections[section] = [row for row in rows if row is not None]  # None: not trained yet
    for row in sections["tuned"]:
        if step_times and row["label"] in step_times:
            row["step_time_ms"] = 1e3 * step_times[row["label"]]
    adamw_ms = next((r["step_time_ms"] for r in sections["tuned"] if r["label"] == "adamw"), None)
    for row in sections["tuned"]:
        row["time_ratio"] = row["step_time_ms"] / adamw_ms if adamw_ms else None
    grid_out = {}
    used = [r for section in plan.values() for r in lookup([job for _, job in section])]
    for label, cells in found.items():
        grid, losses = grids[label], {c: r["final_val_loss"] for c, r in cells.items()}
        rows = []
        for (i, j), run in sorted(cells.items()):
            reached = steps_to_reach(run["eval_steps"], run["val_losses"], targets[first])
            rows.append({"i": i, "j": j, "lr": run["lr"], "adamw_lr": grid.lrs((i, j))[1],
                         "final_val_loss": run["final_val_loss"],
                         "fraction": None if reached is None or run["diverged"] else reached / steps})  # fmt: skip
            used.append(run)
        grid_out[label] = {
            "optimizer": grid.optimizer, "kwargs": grid.kwargs, "lr0": grid.lr0,
            "adamw_lr0": grid.adamw_lr0, "cells": rows, "best": list(best_cell(losses)),
            "unbracketed": on_edge(losses, grid.search_axes),
            "axes": grid.search_axes,
        }  # fmt: skip
    return {
        "config": config,
        "targets": targets,
        "target_mean": statistics.fmean(targets.values()),
        "grids": grid_out,
        "table": sections["tuned"],
        "defaults": sections["defaults"],
        "ablation": sections["ablation"],
        "_runs": used,
    }


def plot_inputs(summary: dict[str, Any], runs: list[dict[str, Any]]) -> tuple[dict, list[dict]]:
    """The tuned rows and their runs, relabelled so that :func:`plot_curves` draws one line each."""
    from .efficiency_config import run_key

    by_key = {run_key(r["optimizer"], r["lr"], r["seed"], r["kwargs"]): r for r in runs}
    rows, picked = [], []
    for row in summary["table"]:
        rows.append({"optimizer": row["label"], "lr": row["lr"]})
        for seed in row["seeds"]:
            run = by_key[run_key(row["optimizer"], row["lr"], seed, row["kwargs"])]
            picked.append({**run, "optimizer": row["label"]})
    return {**summary, "table": rows}, picked


def _lr_text(row: dict[str, Any]) -> str:
    if row["adamw_lr"] is None:
        return f"{row['lr']:.3g}"
    return f"{row['lr']:.3g} / {row['adamw_lr']:.3g}"


def tuned_table(summary: dict[str, Any]) -> str:
    """Main table: each tuned row over the seeds."""
    cfg = summary["config"]
    lines = [
        "| optimizer | lr / AdamW-branch lr | % of AdamW's steps to reach AdamW's final val loss "
        "| final val loss | time / step (ms) | time vs AdamW |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["table"]:
        note = ""
        if row["fraction"] is not None and row["reached_seeds"] < len(row["seeds"]):
            note = f" ({row['reached_seeds']}/{len(row['seeds'])} seeds reached it)"
        timing = (
            f"{row['step_time_ms']:.0f} | {row['time_ratio']:.2f}×"
            if "step_time_ms" in row
            else "– | –"
        )
        lines.append(
            f"| {row['label']} | {_lr_text(row)} | {_fmt_spread(row['fraction'], pct=True)}{note} | "
            f"{_fmt_spread(row['final_val_loss'])} | {timing} |"
        )
    lines += [
        "",
        f"Mean over seeds {cfg['seeds']} [min–max]. Losses in nats per byte. Time per step: "
        + (
            "median of interleaved rounds of every configuration in one process."
            if cfg.get("timing") == "interleaved"
            else "median over each configuration's training runs."
        ),
    ]
    return "\n".join(lines) + "\n"


def grid_table(label: str, grid: dict[str, Any]) -> str:
    """A grid as a table: rows = matrix lr, columns = AdamW-branch lr; the best cell in bold."""
    cells = {(c["i"], c["j"]): c for c in grid["cells"]}
    best = tuple(grid["best"])

    def text(c: dict[str, Any]) -> str:
        if not math.isfinite(c["final_val_loss"]):
            return "diverged"
        value = f"{c['final_val_loss']:.3f}"
        return f"**{value}**" if (c["i"], c["j"]) == best else value

    i_values = sorted({i for i, _ in cells})
    j_values = sorted({j for _, j in cells})
    if grid["adamw_lr0"] is None:
        head = "| lr | " + " | ".join(f"{cells[(i, 0)]['lr']:.3g}" for i in i_values) + " |"
        body = ["| final val loss | " + " | ".join(text(cells[(i, 0)]) for i in i_values) + " |"]
        return "\n".join([head, "|---" * (len(i_values) + 1) + "|", *body]) + "\n"
    adamw = {j: grid["adamw_lr0"] * 2.0**j for j in j_values}
    head = "| lr ↓ · AdamW-branch lr → | " + " | ".join(f"{adamw[j]:.3g}" for j in j_values) + " |"
    body = []
    for i in i_values:
        lr = grid["lr0"] * 2.0**i
        row = [text(cells[(i, j)]) if (i, j) in cells else "" for j in j_values]
        body.append(f"| {lr:.3g} | " + " | ".join(row) + " |")
    return "\n".join([head, "|---" * (len(j_values) + 1) + "|", *body]) + "\n"


def defaults_table(rows: list[dict[str, Any]]) -> str:
    """Rows labelled ``"optimizer|setting"``: one line per optimizer and setting."""
    lines = [
        "| optimizer | setting | lr / AdamW-branch lr | % of AdamW's steps | final val loss |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        name, _, setting = row["label"].partition("|")
        lines.append(
            f"| {name} | {setting} | {_lr_text(row)} | {_fmt_spread(row['fraction'], pct=True)} | "
            f"{_fmt_spread(row['final_val_loss'])} |"
        )
    return "\n".join(lines) + "\n"


def ablation_table(rows: list[dict[str, Any]]) -> str:
    """The AdaMuon ablation: one change at a time from the grid's best cell."""
    lines = ["| AdaMuon variant | % of AdamW's steps | final val loss |", "|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['label']} | {_fmt_spread(row['fraction'], pct=True)} | "
            f"{_fmt_spread(row['final_val_loss'])} |"
        )
    return "\n".join(lines) + "\n"


def markdown_report(summary: dict[str, Any]) -> str:
    """The results tables (tuned rows, defaults, grids, ablation) in GitHub-flavoured markdown."""
    parts = [tuned_table(summary), "Defaults (seed " f"{summary['config']['seeds'][0]}):\n",
             defaults_table(summary["defaults"])]  # fmt: skip
    for label, grid in summary["grids"].items():
        parts += [f"Grid `{label}` (final val loss, seed {summary['config']['seeds'][0]}):\n",
                  grid_table(label, grid)]  # fmt: skip
    if summary["ablation"]:
        parts += ["AdaMuon ablation:\n", ablation_table(summary["ablation"])]
    return "\n".join(parts)


def curves_figure(summary: dict[str, Any], runs: list[dict[str, Any]]) -> Any:
    """The figure of :func:`plot_curves`: full curves (left) and a zoom on the end (right).

    The zoom shows the second half of the steps, with y limits that hold every curve and band
    there and AdamW's final loss (dashed); the legend sits inside the full panel (its curves
    leave the upper right empty) and beside the zoom, never over its curves.
    """
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.5, 4.5), layout="constrained")
    ax, zoom = fig.subplots(1, 2)
    target = summary["target_mean"]
    total = summary["config"]["train"]["steps"]
    start = 0.5 * total
    low, high = target, target
    # one colour per curve, also past the default cycle's ten (tab20 pairs dark and light shades)
    ax.set_prop_cycle(color=[matplotlib.colormaps["tab20"](i) for i in range(0, 20)])
    zoom.set_prop_cycle(color=[matplotlib.colormaps["tab20"](i) for i in range(0, 20)])
    for row in summary["table"]:
        chosen = [
            r
            for r in runs
            if r["optimizer"] == row["optimizer"]
            and r["lr"] == row["lr"]
            and math.isfinite(r["final_val_loss"])
        ]
        if not chosen:
            continue
        steps = chosen[0]["eval_steps"]
        curves = [r["val_losses"] for r in chosen if len(r["val_losses"]) == len(steps)]
        mean = [statistics.fmean(v) for v in zip(*curves, strict=True)]
        lo = [min(v) for v in zip(*curves, strict=True)]
        hi = [max(v) for v in zip(*curves, strict=True)]
        for axis in (ax, zoom):
            (line,) = axis.plot(steps, mean, label=f"{row['optimizer']} (lr {row['lr']:.3g})")
            axis.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
        late = [i for i, s in enumerate(steps) if s >= start and math.isfinite(hi[i])]
        if late:
            low = min(low, *(lo[i] for i in late))
            high = max(high, *(hi[i] for i in late))
    for axis in (ax, zoom):
        axis.axhline(target, color="black", linestyle="--", linewidth=0.8)
        axis.set_xlabel("step")
        axis.set_ylabel("validation loss (nats/byte)")
        axis.grid(alpha=0.3)
    pad = 0.05 * (high - low) or 0.05
    zoom.set_xlim(start, total)
    zoom.set_ylim(low - pad, high + pad)
    zoom.set_title("second half of the steps; dashed: AdamW's final loss")
    ax.set_title("validation loss, mean over seeds (band: min–max)")
    ax.legend(fontsize=8)
    zoom.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the data
    return fig


def plot_curves(summary: dict[str, Any], runs: list[dict[str, Any]], path: Path) -> None:
    """Validation-loss curves (mean over seeds, min–max band) at each optimizer's chosen lr."""
    curves_figure(summary, runs).savefig(path, dpi=120)
