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


def markdown_report(summary: dict[str, Any]) -> str:
    """The results tables (main table, then the lr sweep) in GitHub-flavoured markdown."""
    cfg = summary["config"]
    lines = [
        "| optimizer | lr (best of sweep) | % of AdamW's steps to reach AdamW's final val loss "
        "| final val loss | time / step (ms) | time vs AdamW |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["table"]:
        reached = row["fraction"]
        note = ""
        if reached is not None and row["reached_seeds"] < len(cfg["seeds"]):
            note = f" ({row['reached_seeds']}/{len(cfg['seeds'])} seeds reached it)"
        lines.append(
            f"| {row['optimizer']} | {row['lr']:.3g} | {_fmt_spread(reached, pct=True)}{note} | "
            f"{_fmt_spread(row['final_val_loss'])} | {row['step_time_ms']:.0f} | "
            f"{row['time_ratio']:.2f}× |"
        )
    lines += [
        "",
        f"Mean over seeds {cfg['seeds']} [min–max]. Losses in nats per byte. Time per step: "
        + (
            "median of interleaved rounds of every optimizer in one process."
            if cfg.get("timing") == "interleaved"
            else "median over each optimizer's training runs."
        ),
        "",
        "Learning-rate sweep (seed "
        f"{cfg['seeds'][0]}, final validation loss; the best of each row is in bold):",
        "",
    ]
    for name, runs in summary["sweep"].items():
        best = min(runs, key=lambda r: r["final_val_loss"])
        cells = [
            (f"**{r['lr']:.3g}: {r['final_val_loss']:.3f}**" if r is best else None)
            or (
                f"{r['lr']:.3g}: diverged"
                if not math.isfinite(r["final_val_loss"])
                else f"{r['lr']:.3g}: {r['final_val_loss']:.3f}"
            )
            for r in sorted(runs, key=lambda r: r["lr"])
        ]
        lines.append(f"- {name}: " + ", ".join(cells))
    return "\n".join(lines) + "\n"


def curves_figure(summary: dict[str, Any], runs: list[dict[str, Any]]) -> Any:
    """The figure of :func:`plot_curves`: full curves (left) and a zoom on the end (right).

    The zoom shows the second half of the steps, with y limits that hold every curve and band
    there and AdamW's final loss (dashed); the legend sits inside the full panel (its curves
    leave the upper right empty) and beside the zoom, never over its curves.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.5, 4.5), layout="constrained")
    ax, zoom = fig.subplots(1, 2)
    target = summary["target_mean"]
    total = summary["config"]["train"]["steps"]
    start = 0.5 * total
    low, high = target, target
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
