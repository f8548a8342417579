"""Newton–Schulz coefficient tables: accuracy against the exact polar factor, and cost.

``python -m lightning_muon.benchmarks.ns_quality`` runs every table (Jordan, You, Polar Express)
for 3 to 8 steps on three kinds of input and reports, against
:func:`~lightning_muon.core.orthogonalize.exact_polar`:

* the *band* of the output's singular values over the input directions that matter (``σ ≥ 10⁻³
  σ_max``): ``[min σ, max σ]`` (the polar factor has all of them equal to 1);
* the RMS error over those directions, ``‖U_kᵀ(O − polar(X))‖_F / √k`` (``U_k``: the input's
  left singular vectors with ``σ ≥ 10⁻³ σ_max``; 0 is exact);
* the time of one call on a GPT-2 MLP matrix (768 × 3072), measured in interleaved rounds with
  the exact SVD polar factor as the yardstick.

Inputs (seeded): ``gaussian`` (i.i.d. entries: a well-spread spectrum), ``ill-conditioned``
(singular values log-spaced from 1 to 10⁻⁶) and ``low-rank`` (rank 8 plus 10⁻³ noise, like a
momentum matrix late in training), each ``wide`` (256 × 1024) and ``square`` (384 × 384).

Example:
    >>> from lightning_muon.core.orthogonalize import JORDAN
    >>> row = quality_row(JORDAN, 5, torch.float32, inputs(seed=0, scale=0.25))
    >>> all(high < 1.25 for _, high in row["band"].values())  # Jordan overshoots to ~1.2
    True
    >>> row["error"]["low-rank"] < row["error"]["ill-conditioned"]
    True
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from typing import Any

import torch

from ..core.orthogonalize import (
    NAMED_TABLES,
    NewtonSchulzTable,
    exact_polar,
    newton_schulz,
)
from .machine import machine_info
from .report import command_line, write_outputs
from .timing import default_clock, interleaved, timed

KINDS = ("gaussian", "ill-conditioned", "low-rank")
SHAPES = {"wide": (256, 1024), "square": (384, 384)}
TIMING_SHAPE = (768, 3072)
#: Directions with ``σ < RELEVANT·σ_max`` are left out of the band (no step count reaches them).
RELEVANT = 1e-3


def _orthogonal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return q


def make_input(kind: str, shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """One float64 test matrix of ``kind`` and ``shape``."""
    m, n = shape
    k = min(m, n)
    if kind == "gaussian":
        return torch.randn(m, n, generator=gen, dtype=torch.float64)
    if kind == "ill-conditioned":
        s = torch.logspace(0, -6, k, dtype=torch.float64)
        return (_orthogonal(m, k, gen) * s) @ _orthogonal(n, k, gen).T
    if kind == "low-rank":
        low = torch.randn(m, 8, generator=gen, dtype=torch.float64)
        low = low @ torch.randn(8, n, generator=gen, dtype=torch.float64)
        noise = torch.randn(m, n, generator=gen, dtype=torch.float64)
        return low / low.norm() + 1e-3 * noise / noise.norm()
    raise ValueError(f"Invalid kind: {kind!r}; expected one of {KINDS}")


def inputs(seed: int = 0, scale: float = 1.0) -> dict[str, list[torch.Tensor]]:
    """Test matrices per kind (one per shape); ``scale`` shrinks the shapes (for quick checks)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list[torch.Tensor]] = {}
    for kind in KINDS:
        out[kind] = [
            make_input(kind, (max(8, int(m * scale)), max(8, int(n * scale))), gen)
            for m, n in SHAPES.values()
        ]
    return out


def _compare(X: torch.Tensor, O: torch.Tensor) -> tuple[float, float, float]:
    """Band ``(min σ, max σ)`` of ``O`` and RMS error to ``polar(X)`` over the relevant directions."""
    U, sx, Vh = torch.linalg.svd(X, full_matrices=False)
    k = int((sx >= RELEVANT * sx[0]).sum())
    # O = U f(Σ) Vᵀ up to round-off: its singular values on the relevant directions
    so = torch.linalg.svdvals(U[:, :k].T @ O.double())
    error = (U[:, :k].T @ O.double() - Vh[:k]).norm() / k**0.5
    return float(so.min()), float(so.max()), float(error)


def quality_row(
    table: NewtonSchulzTable,
    steps: int,
    dtype: torch.dtype,
    matrices: dict[str, list[torch.Tensor]],
    form: str = "auto",
) -> dict[str, Any]:
    """Band and relative error of one (table, steps, dtype, form) on every input kind."""
    band: dict[str, tuple[float, float]] = {}
    error: dict[str, float] = {}
    for kind, mats in matrices.items():
        lows, highs, errs = [], [], []
        for X in mats:
            O = newton_schulz(X.float(), table, steps, dtype=dtype, form=form)
            low, high, err = _compare(X, O)
            lows.append(low)
            highs.append(high)
            errs.append(err)
        band[kind] = (min(lows), max(highs))
        error[kind] = max(errs)
    return {"band": band, "error": error}


def run(
    tables: Sequence[str] = tuple(NAMED_TABLES),
    steps: Sequence[int] = range(3, 9),
    rounds: int = 5,
    seed: int = 0,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Quality and time of every configuration; returns the JSON-ready result."""
    if threads is not None:
        torch.set_num_threads(threads)
    clock = default_clock("cpu", torch.get_num_threads())
    matrices = inputs(seed)
    configs: list[tuple[str, int, torch.dtype, str]] = [
        (name, k, torch.float32, "auto") for name in tables for k in steps
    ]
    configs += [(name, 5, torch.bfloat16, "auto") for name in tables]
    configs += [("jordan", 5, torch.float32, "direct")]
    rows = []
    for name, k, dtype, form in configs:
        row = quality_row(NAMED_TABLES[name], k, dtype, matrices, form)
        row.update(table=name, steps=k, dtype=str(dtype).removeprefix("torch."), form=form)
        rows.append(row)
    X = make_input("gaussian", TIMING_SHAPE, torch.Generator().manual_seed(seed)).float()
    runs = {
        _label(r): (
            lambda r=r: timed(
                lambda: newton_schulz(
                    X,
                    NAMED_TABLES[r["table"]],
                    r["steps"],
                    dtype=getattr(torch, r["dtype"]),
                    form=r["form"],
                ),
                lambda: None,
                clock,
            )
        )
        for r in rows
    }
    runs["svd (float64)"] = lambda: timed(lambda: exact_polar(X), lambda: None, clock)
    times = interleaved(runs, rounds, warmup=1)
    for r in rows:
        r["time_s"] = statistics.median(times[_label(r)])
    return {
        "machine": machine_info(torch.device("cpu")),
        "config": {"rounds": rounds, "seed": seed, "threads": torch.get_num_threads(),
                   "clock": clock, "timing_shape": TIMING_SHAPE, "shapes": SHAPES},
        "svd_time_s": statistics.median(times["svd (float64)"]),
        "rows": rows,
    }  # fmt: skip


def _label(row: dict[str, Any]) -> str:
    return f"{row['table']} x{row['steps']} {row['dtype']} {row['form']}"


def markdown(result: dict[str, Any]) -> str:
    """The result as markdown tables (one row per configuration)."""
    c = result["config"]
    lines = [
        "## Newton–Schulz tables: accuracy and cost",
        "",
        f"- command: `{result.get('command', 'python -m lightning_muon.benchmarks.ns_quality')}`",
        f"- {result['machine']['cpu']}, torch {result['machine']['torch']}, {c['threads']} thread(s),"
        f" {c['clock']} clock, {c['rounds']} interleaved rounds; time of one call on"
        f" {c['timing_shape'][0]}×{c['timing_shape'][1]}; exact polar factor by float64 SVD:"
        f" {result['svd_time_s'] * 1e3:.0f} ms",
        "",
        "Singular-value band of the output over the input directions with σ ≥ 10⁻³σ_max "
        "(ideal: [1, 1]), and the RMS error to the exact polar factor on those directions (ideal: 0).",
        "",
        "| table | steps | dtype | form | time (ms) | band gaussian | band ill-cond. | band low-rank"
        " | error gaussian | error ill-cond. | error low-rank |",
        "|---|---:|---|---|---:|---|---|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        bands = " | ".join(f"[{lo:.2f}, {hi:.2f}]" for lo, hi in r["band"].values())
        errors = " | ".join(f"{e:.3f}" for e in r["error"].values())
        lines.append(
            f"| {r['table']} | {r['steps']} | {r['dtype']} | {r['form']} |"
            f" {r['time_s'] * 1e3:.0f} | {bands} | {errors} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_muon.benchmarks.ns_quality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tables", default=",".join(NAMED_TABLES))
    parser.add_argument("--steps", default="3,4,5,6,7,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    result = run(
        [t for t in args.tables.split(",") if t],
        [int(k) for k in args.steps.split(",") if k],
        args.rounds,
        args.seed,
        args.threads or None,
    )
    result["command"] = command_line("ns_quality", argv)
    write_outputs(result, markdown(result), args.json, args.markdown)
    return result


if __name__ == "__main__":
    main()
