"""The generated efficiency pages: targets judged from the numbers, pages current with the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_muon.benchmarks import efficiency_page
from lightning_muon.benchmarks.efficiency_page import render, targets

ROOT = Path(__file__).resolve().parents[2]
JSON = ROOT / "docs" / "benchmarks" / "efficiency-cpu.json"


def _row(label, fractions, finals, lr=1e-2, adamw_lr=None, optimizer=None):
    seeds = list(range(len(finals)))
    reached = [f for f in fractions if f is not None]
    spread = lambda xs: {"mean": sum(xs) / len(xs), "min": min(xs), "max": max(xs)}  # noqa: E731
    return {
        "label": label, "optimizer": optimizer or label.split("|")[0].split(" ")[0], "lr": lr,
        "adamw_lr": adamw_lr, "kwargs": {}, "seeds": seeds,
        "per_seed": {str(s): {"final_val_loss": v, "fraction": f}
                     for s, v, f in zip(seeds, finals, fractions)},
        "fraction": spread(reached) if reached else None, "reached_seeds": len(reached),
        "final_val_loss": spread(finals), "step_time_ms": 100.0, "time_ratio": 1.0,
    }  # fmt: skip


def _data(**fractions):
    table = [_row("adamw", [1.0, 1.0], [1.8, 1.9])]
    table += [_row(n, [f, f], [1.7, 1.7], adamw_lr=1e-2) for n, f in fractions.items()]
    defaults = [
        _row("normuon|0.1 defaults, AdamW's lr", [0.9], [1.75]),
        _row("muon|0.1 defaults, AdamW's lr", [None], [1.85]),
    ]
    grid = {"optimizer": "normuon", "kwargs": {}, "lr0": 1e-2, "adamw_lr0": 1e-2, "best": [0, 0],
            "unbracketed": [], "cells": [
                {"i": i, "j": j, "lr": 1e-2 * 2**i, "adamw_lr": 1e-2 * 2**j,
                 "final_val_loss": 1.7 + 0.1 * (abs(i) + abs(j)), "fraction": 0.5}
                for i, j in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]]}  # fmt: skip
    return {
        "config": {"model": {"n_layer": 4, "n_embd": 128, "block_size": 128},
                   "train": {"steps": 400, "batch_size": 4, "warmup_steps": 20, "min_lr_ratio": 0.1},
                   "seeds": [0, 1], "command": "python -m lightning_muon.benchmarks.efficiency",
                   "timing": "interleaved"},
        "targets": {"0": 1.8, "1": 1.9}, "compute_s": 3600.0, "table": table,
        "defaults": defaults, "ablation": [], "grids": {"normuon": grid},
    }  # fmt: skip


def test_targets_are_judged_from_the_numbers() -> None:
    data = _data(muon=0.6, hybrid=0.55, normuon=0.45, adamuon=0.62, muon_nsr=0.5)
    met = {t.split(",")[0]: ok for t, _, ok in targets(data)}
    assert met["normuon"] is True  # 45% ≤ 50% and below Muon's 60%
    assert met["adamuon"] is False  # 62%: above 50% and above Muon
    assert met["muon_nsr"] is True  # exactly 50% counts
    judged = {t: ok for t, _, ok in targets(data)}
    # every Muon-family optimizer at AdamW's lr must end below AdamW's 1.8: Muon's 1.85 does not
    at_adamw = [(t, m, ok) for t, m, ok in targets(data) if "AdamW's tuned lr" in t]
    assert len(at_adamw) == 1 and at_adamw[0][2] is False and "not: muon" in at_adamw[0][1]
    assert met["muon_vs"] is False  # not measured: missed, said so
    assert [m for t, m, _ in targets(data) if t.startswith("muon_vs")] == ["not measured"]
    assert len(judged) == 5


def test_muon_target_against_the_hybrid() -> None:
    data = _data(muon=0.6, hybrid=0.55)
    data["table"].append(
        _row("muon (defaults)", [0.5, 0.52], [1.7, 1.7], optimizer="muon")
    )
    (muon_target,) = [(m, ok) for t, m, ok in targets(data) if "hybrid" in t]
    assert muon_target == ("51% (2 seeds)", True)
    data["table"][-1] = _row("muon (defaults)", [0.6, 0.6], [1.7, 1.7], optimizer="muon")
    assert [ok for t, _, ok in targets(data) if "hybrid" in t] == [False]


def test_switching_page_lists_each_optimizer() -> None:
    page = efficiency_page.switching_page(_data(muon=0.6, normuon=0.45))
    assert "| normuon | 0.01 / 0.01 | 45% |" in page and "AdamW's tuned lr there: 0.01" in page


def test_render_shows_grids_seeds_and_targets() -> None:
    page = render(_data(muon=0.6, hybrid=0.55, normuon=0.45))
    assert "## Targets" in page and "**met**" in page and "**missed**" in page
    assert "| seed 0 | seed 1 |" in page
    assert "### normuon" in page and "**1.700**" in page  # the grid, best cell in bold
    assert "| normuon | 0.01 / 0.01 | 1.700 | 1.800 | 1.800 |" in page  # AdamW-branch ½× and 2×
    assert "Not bracketed" not in page


@pytest.mark.skipif(not JSON.exists(), reason="no committed benchmark JSON")
def test_committed_pages_are_generated_from_the_committed_json() -> None:
    assert efficiency_page.main([str(JSON), "--check"]) == 0
    data = json.loads(JSON.read_text())
    assert JSON.stat().st_size < 2_000_000
    assert data["config"]["train"]["steps"] == 400 and len(data["config"]["seeds"]) >= 2
