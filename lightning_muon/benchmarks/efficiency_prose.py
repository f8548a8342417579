"""The words of the generated efficiency pages, written against the numbers of the benchmark's JSON.

Each text takes its numbers from the JSON (``prose(data)``), so a rerun of the benchmark changes
the numbers on the page, and the comparisons ("fewer", "misses") are computed, not typed.
"""

from __future__ import annotations

from typing import Any


def _rows(data: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    return {row["label"]: row for row in data[section]}


def _f(row: dict[str, Any] | None) -> float | None:
    return None if row is None or row["fraction"] is None else row["fraction"]["mean"]


def _pct(x: float | None, row: Any = True) -> str:
    if row is None:
        return "not measured"
    return "not reached" if x is None else f"{100 * x:.0f}%"


def _loss(row: dict[str, Any] | None) -> str:
    return (
        "–"
        if row is None or row["final_val_loss"] is None
        else f"{row['final_val_loss']['mean']:.3f}"
    )


def papers(data: dict[str, Any]) -> str:
    """The comparison with the papers' claims, as a table."""
    t = _rows(data, "table")
    muon = _f(t.get("muon"))
    normuon, adamuon = _f(t.get("normuon")), _f(t.get("adamuon"))
    nsr = _f(t.get("muon_nsr"))
    pct = lambda name: _pct(_f(t.get(name)), t.get(name))  # noqa: E731

    def vs_muon(x: float | None) -> str:
        if x is None or muon is None:
            return "–"
        return (
            f"{muon / x:.2f}× fewer steps than tuned Muon"
            if x < muon
            else f"{x / muon:.2f}× more steps than tuned Muon"
        )

    def verdict(x: float | None, bound: float) -> str:
        return "–" if x is None else ("matches" if x <= bound else "misses")

    m = data["config"]["model"]
    rows = [
        "| claim | paper | here |",
        "|---|---|---|",
        f"| Muon + AdamW hybrid (one lr 1e-2, Moonlight scaling) vs AdamW | 0.55 of AdamW's steps "
        f"(an independent harness, 2,048 tokens/step) | {pct('hybrid')} |",
        f"| NorMuon vs AdamW / vs Muon | 21.7% fewer tokens than AdamW (≤ 78%), 11.3% over Muon "
        f"(1.1 B) | {pct('normuon')} of AdamW's steps ({verdict(normuon, 0.783)}); {vs_muon(normuon)} |",
        f"| AdaMuon vs AdamW | > 40% fewer tokens (< 60%) | {pct('adamuon')} of AdamW's steps "
        f"({verdict(adamuon, 0.6)}); {vs_muon(adamuon)} |",
        f"| Muon-NSR / Muon-VS vs tuned Muon | 1.36× fewer iterations (1.2 B) | {pct('muon_nsr')} / "
        f"{pct('muon_vs')} of AdamW's steps; {vs_muon(nsr)} (NSR) |",
    ]
    return (
        "\n".join(rows)
        + f"\n\nThe papers train 10⁸–10⁹-parameter models for billions of tokens; this benchmark is a "
        f"{m['n_layer']}-layer, {m['n_embd']}-wide model trained for "
        f"{data['config']['train']['steps']} steps, so a claim that does not hold here may still "
        "hold at scale, and 3 seeds cannot resolve differences of a few percent."
    )


def intro(data: dict[str, Any]) -> str:
    """What of the protocol this page's measurement covers (it may be cut short on a busy machine)."""
    cfg, tuned = data["config"], _rows(data, "table")
    seeds = cfg["seeds"]
    full = [r["label"] for r in data["table"] if len(r["seeds"]) == len(seeds)]
    partial = [
        f"{r['label']} ({len(r['seeds'])})" for r in data["table"] if len(r["seeds"]) < len(seeds)
    ]
    unbracketed = {
        label: g["unbracketed"] for label, g in data["grids"].items() if g["unbracketed"]
    }
    no_grid = [n for n in cfg.get("no_grid", []) if n in tuned or n == "spectral_muon"]
    lines = [
        "**What this page's run covers.** The protocol above is what the command runs to the end. "
        "On the shared 2-core machine that produced this page a 400-step run took "
        f"{_median_wall(data) / 60:.0f} minutes instead of about half a minute, so the run was cut "
        "to fit its time: its numbers are what the cache held (`--cached-only`). "
    ]
    if no_grid:
        lines.append(
            f"Without their own grid: {', '.join(no_grid)} (Muon-VS at Muon-NSR's cell, "
            "Muon-NSR at its grid's centre, SpectralMuon at its defaults only). "
        )
    if unbracketed:
        lines.append(
            "Not bracketed (the best cell sits on the grid's edge there, so the tuned result is an "
            "upper bound on the loss): "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in unbracketed.items())
            + ". "
        )
    lines.append(f"All {len(seeds)} seeds: {', '.join(full) or 'none'}")
    if partial:
        lines.append(f"; fewer seeds (count): {', '.join(partial)}")
    return "".join(lines) + "."


def _median_wall(data: dict[str, Any]) -> float:
    walls = sorted(r["wall_s"] for r in data["runs"])
    return walls[len(walls) // 2] if walls else float("nan")


def prose(data: dict[str, Any]) -> dict[str, str]:
    """Section name → text (see :func:`lightning_muon.benchmarks.efficiency_page.render`)."""
    return {"intro": intro(data), "papers": papers(data)}
