"""The training-efficiency documentation page, generated from the benchmark's JSON.

Every number on the page comes from the JSON that ``python -m lightning_muon.benchmarks.efficiency``
writes, so the page cannot drift from the measurement: the tests regenerate it from the committed
JSON and compare.

Run::

    python -m lightning_muon.benchmarks.efficiency_page docs/benchmarks/efficiency-cpu.json \\
        docs/benchmarks/efficiency.md
    python -m lightning_muon.benchmarks.efficiency_page docs/benchmarks/efficiency-cpu.json \\
        docs/benchmarks/efficiency.md --check   # exit status 1 if the page is out of date
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from .efficiency_report import (
    ablation_table,
    defaults_table,
    grid_table,
    tuned_table,
)

#: The optimizers of the project's target (each ≤ 0.5 of AdamW's steps and below Muon).
TARGET_OPTIMIZERS = ("normuon", "adamuon", "muon_nsr", "muon_vs")
FAMILY = ("muon", "normuon", "adamuon", "muon_nsr", "muon_vs", "spectral_muon")


def _rows(data: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    return {row["label"]: row for row in data[section]}


def _frac(row: dict[str, Any] | None) -> float | None:
    return None if row is None or row["fraction"] is None else row["fraction"]["mean"]


def _pct(x: float | None) -> str:
    return "not reached" if x is None else f"{100 * x:.0f}%"


def _mark(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def targets(data: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """``(target, measured, met)`` for each target of the benchmark."""
    tuned, defaults = _rows(data, "table"), _rows(data, "defaults")
    muon = _frac(tuned.get("muon"))
    out = []
    for name in TARGET_OPTIMIZERS:
        x = _frac(tuned.get(name))
        ok = x is not None and x <= 0.5 and muon is not None and x < muon
        measured = f"{_pct(x)} ({_spread_pct(tuned[name])})" if name in tuned else "not measured"
        out.append(
            (f"{name}, its own tuned lrs: ≤ 50% of AdamW's steps and below Muon's {_pct(muon)}",
             measured, ok)
        )  # fmt: skip
    hybrid = _frac(tuned.get("hybrid"))
    for label in ("muon (defaults)", "muon|0.1 defaults"):
        row = tuned.get(label) or defaults.get(label)
        if row is None or hybrid is None:
            continue
        x = _frac(row)
        seeds = f"{len(row['seeds'])} seed{'s' if len(row['seeds']) > 1 else ''}"
        out.append(
            (f"Muon at its {label.split('|')[-1].replace('muon (', '').rstrip(')')}: no worse "
             f"than the one-lr hybrid's {_pct(hybrid)}",
             f"{_pct(x)} ({seeds})", x is not None and x <= hybrid)
        )  # fmt: skip
    adamw_final = data["targets"][str(data["config"]["seeds"][0])]
    for setting in ("defaults", "0.1 defaults"):
        rows = [(n, defaults.get(f"{n}|{setting}, AdamW's lr")) for n in FAMILY]
        rows = [(n, r) for n, r in rows if r is not None]
        if not rows:
            continue
        losing = [
            n
            for n, r in rows
            if not r["per_seed"][str(r["seeds"][0])]["final_val_loss"] < adamw_final
        ]
        measured = ", ".join(
            f"{n} {r['per_seed'][str(r['seeds'][0])]['final_val_loss']:.3f}" for n, r in rows
        )
        out.append(
            (f"every Muon-family optimizer at AdamW's tuned lr, {setting} otherwise: final loss "
             f"below AdamW's {adamw_final:.3f}",
             measured + (f"; not: {', '.join(losing)}" if losing else ""), not losing)
        )  # fmt: skip
    return out


def _spread_pct(row: dict[str, Any]) -> str:
    f = row["fraction"]
    if f is None:
        return "not reached"
    n = len(row["seeds"])
    if n == 1:
        return "1 seed"
    return f"{100 * f['min']:.0f}–{100 * f['max']:.0f}% over {n} seeds"


def targets_table(data: dict[str, Any]) -> str:
    lines = ["| target | measured | |", "|---|---|---|"]
    for target, measured, ok in targets(data):
        lines.append(f"| {target} | {measured} | {_mark(ok)} |")
    return "\n".join(lines) + "\n"


def seeds_table(data: dict[str, Any]) -> str:
    """Per seed: final loss and fraction of every tuned row (the spread behind the means)."""
    seeds = data["config"]["seeds"]
    head = "| configuration | " + " | ".join(f"seed {s}" for s in seeds) + " |"
    lines = [head, "|---" * (len(seeds) + 1) + "|"]
    for row in data["table"]:
        cells = []
        for s in seeds:
            v = row["per_seed"].get(str(s))
            cells.append("" if v is None else f"{v['final_val_loss']:.3f} ({_pct(v['fraction'])})")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def adamw_branch_table(data: dict[str, Any]) -> str:
    """How much the AdamW-branch lr matters: at each grid's best matrix lr, the loss along j."""
    lines = [
        "| optimizer | best cell (lr / AdamW-branch lr) | best loss | AdamW-branch lr ½× | 2× |",
        "|---|---|---|---|---|",
    ]
    for label, grid in data["grids"].items():
        if grid["adamw_lr0"] is None:
            continue
        cells = {(c["i"], c["j"]): c for c in grid["cells"]}
        bi, bj = grid["best"]
        best = cells[(bi, bj)]

        def loss(j: int, cells=cells, bi=bi) -> str:
            c = cells.get((bi, j))
            if c is None:
                return "–"
            return (
                "diverged"
                if not math.isfinite(c["final_val_loss"])
                else f"{c['final_val_loss']:.3f}"
            )

        lines.append(
            f"| {label} | {best['lr']:.3g} / {best['adamw_lr']:.3g} | {best['final_val_loss']:.3f} "
            f"| {loss(bj - 1)} | {loss(bj + 1)} |"
        )
    return "\n".join(lines) + "\n"


def render(data: dict[str, Any], prose: dict[str, str] | None = None) -> str:
    """The page: method, results, targets, grids, defaults, ablation, comparison with the papers.

    ``prose`` maps section names (``"intro"``, ``"defaults"``, ``"ablation"``, ``"papers"``) to
    text written against this JSON (numbers in it are checked by the tests)."""
    prose = prose or {}
    cfg = data["config"]
    m, t = cfg["model"], cfg["train"]
    first = cfg["seeds"][0]
    tokens = t["batch_size"] * m["block_size"]
    parts = [
        "# Training efficiency against AdamW\n",
        "The papers' metric: the share of AdamW's steps each optimizer needs to reach AdamW's final "
        f"validation loss. Same litgpt GPT ({m['n_layer']} layers, width {m['n_embd']}, byte-level, "
        f"the Python standard library's source), {t['steps']} steps of {tokens} tokens, warmup "
        f"{t['warmup_steps']} steps then cosine to {t['min_lr_ratio']}× (litgpt's schedule, "
        "applied to every param group), gradient clipping 1.0, the same data order for every "
        "optimizer. Each Muon-family optimizer is tuned on a 2-D grid, **matrix lr × AdamW-branch "
        "lr** (the lr of the embeddings, head, norms and biases, given as an absolute lr; the "
        "optimizer gets `adamw_lr_ratio = adamw_lr / lr`), factors of 2, searched from a centre "
        "until the best cell is bracketed on both axes; AdamW the same way in 1-D. The best cell "
        f"is then run on seeds {cfg['seeds']}.\n",
        "```bash\n" + cfg["command"].replace(" --cached-only", "") + "\n```\n",
        f"{data['compute_s'] / 3600:.1f} hours of single-thread training runs on a shared 2-core "
        "CPU (raw results and every curve: `benchmarks/efficiency-cpu.json`; this page is "
        "generated from it by `python -m lightning_muon.benchmarks.efficiency_page`). "
        "`--preset gpu` is the larger setting (12 × 768, 16k tokens/step, 1000 steps, bf16) for "
        "a GPU, with the same grid and seeds; it has not been run for this page:\n",
        "```bash\npython -m lightning_muon.benchmarks.efficiency --preset gpu --no-grid "
        "--out runs/efficiency/gpu.json\n```\n",
        "(`--no-grid` with no names gives every optimizer its own grid; by default Muon-VS takes "
        "Muon-NSR's cell and SpectralMuon runs at its defaults only.)\n",
    ]
    if prose.get("intro"):
        parts.append(prose["intro"] + "\n")
    parts += [
        "## Results at each optimizer's tuned lrs\n",
        tuned_table(data),
        "Per seed (final val loss, % of AdamW's steps):\n",
        seeds_table(data),
        "![validation loss curves](../img/efficiency-cpu.png)\n",
        "## Targets\n",
        targets_table(data),
        "## Defaults: switching the optimizer and keeping the rest\n",
        f"Seed {first}. *0.1 defaults*: the defaults of lightning_muon 0.1 (lr, `adamw_lr_ratio`, "
        "`scale`), passed explicitly. *Defaults*: the classes' defaults, chosen from the grids "
        "(passed explicitly, so the run means the same if they change again). "
        "*AdamW's lr*: the same with `lr` set to AdamW's tuned lr, as a user who switches the "
        "optimizer flag and keeps the lr would.\n",
        defaults_table(data["defaults"]),
    ]
    if prose.get("defaults"):
        parts.append(prose["defaults"] + "\n")
    parts += [
        "## How much the AdamW-branch lr matters\n",
        f"At each grid's best matrix lr (seed {first}), the final loss with the AdamW-branch lr "
        "halved and doubled (–: not run):\n",
        adamw_branch_table(data),
        "## The grids\n",
        f"Final validation loss, seed {first}; rows: matrix lr, columns: AdamW-branch lr; the best "
        "cell in bold; an empty cell was not run.\n",
    ]
    for label, grid in data["grids"].items():
        note = f" (kwargs {json.dumps(grid['kwargs'])})" if grid["kwargs"] else ""
        unbracketed = (
            f" Not bracketed: {', '.join(grid['unbracketed'])}." if grid["unbracketed"] else ""
        )
        parts += [f"### {label}{note}\n{unbracketed}\n", grid_table(label, grid)]
    if data["ablation"]:
        parts += [
            "## Why AdaMuon falls short here: an ablation\n",
            f"AdaMuon's best cell, seed {first}, one setting changed at a time:\n",
            ablation_table(data["ablation"]),
        ]
        if prose.get("ablation"):
            parts.append(prose["ablation"] + "\n")
    if prose.get("papers"):
        parts += ["## Against the papers\n", prose["papers"] + "\n"]
    return "\n".join(parts)


def switching_page(data: dict[str, Any], prose: dict[str, str] | None = None) -> str:
    """The how-to page "Switching from AdamW": which lr to start from, what the AdamW branch does."""
    prose = prose or {}
    tuned, defaults = _rows(data, "table"), _rows(data, "defaults")
    adamw = tuned["adamw"]
    lines = [
        "| optimizer | tuned lr / AdamW-branch lr | % of AdamW's steps, tuned | defaults "
        "| % of AdamW's steps at them | at AdamW's lr, defaults otherwise |",
        "|---|---|---|---|---|---|",
    ]
    for name in FAMILY:
        row = tuned.get(name)
        measured = tuned.get(f"{name} (defaults)")
        at_adamw = defaults.get(f"{name}|defaults, AdamW's lr") or defaults.get(
            f"{name}|0.1 defaults, AdamW's lr"
        )
        if row is None and measured is None:
            continue
        lines.append(
            f"| {name} | {_lr_pair(row)} | {_pct(_frac(row))} | {_lr_pair(measured)} "
            f"| {_pct(_frac(measured))} | {_pct(_frac(at_adamw))} |"
        )
    parts = [
        "# Switching from AdamW\n",
        prose.get("switch_intro", ""),
        f"Measured on the [training-efficiency benchmark](../benchmarks/efficiency.md) (AdamW's "
        f"tuned lr there: {adamw['lr']:.3g}; percentages are of AdamW's steps to reach its final "
        "loss, lower is better, mean over seeds):\n",
        "\n".join(lines) + "\n",
        "## How much the AdamW branch's lr matters\n",
        prose.get("switch_branch", ""),
        prose.get("switch_rules", ""),
    ]
    return "\n".join(p for p in parts if p)


def _lr_pair(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    if row["adamw_lr"] is None:
        return f"{row['lr']:.3g}"
    return f"{row['lr']:.3g} / {row['adamw_lr']:.3g}"


#: Generated pages, relative to the docs folder (the JSON's grandparent), and their renderers.
PAGES = {"benchmarks/efficiency.md": render, "how-to/switching-from-adamw.md": switching_page}


def main(argv: list[str] | None = None) -> int:
    from .efficiency_prose import prose

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "json", type=Path, nargs="?", default=Path("docs/benchmarks/efficiency-cpu.json")
    )
    p.add_argument("--check", action="store_true", help="exit 1 if a page is out of date")
    args = p.parse_args(argv)
    data = json.loads(args.json.read_text())
    docs = args.json.resolve().parent.parent
    stale = []
    for relative, renderer in PAGES.items():
        page, text = docs / relative, renderer(data, prose(data))
        if args.check:
            if not page.exists() or page.read_text() != text:
                stale.append(str(page))
        else:
            page.write_text(text)
    if stale:
        print(f"out of date (regenerate from {args.json}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
