"""The NorMuon paper's Figure 1 on the quick-start model: update spectra and per-neuron norms.

Trains the quick-start ``GPTLanguageModel`` on the stdlib byte corpus with AdamW, Muon and
NorMuon (same seed and data order; the quick-start recipe's schedule: cosine with 20 warmup
steps; learning rates ``--lr-adamw``, ``--lr-muon``, ``--lr-normuon``; the AdamW baseline with the
NorMuon paper's betas (0.9, 0.95) and weight decay 0.1) for ``--steps`` steps.
``UpdateNormMonitor`` and ``SpectrumMonitor`` watch every hidden matrix on the middle and the
last step of the run. The figure shows, for the MLP up-projection (``mlp.fc_2``) of the middle
block at the middle of the run: (a) the singular values of each optimizer's update ``ΔW`` and of
the raw momentum (the Muon run's), (b) the per-neuron update norms. The numbers are the update
condition number ``κ`` and the per-neuron norm coefficient of variation ``cv`` of that matrix,
plus their medians over all hidden matrices.

Run::

    python -m lightning_muon.benchmarks.figure1 --steps 300 --out docs/img/figure1.png \
        --page docs/figure1.md

It writes the figure, a JSON file with every number next to it, prints the Markdown tables and,
with ``--page``, rewrites the block between ``<!-- figure1:start -->`` and ``<!-- figure1:end -->``
of that page. The JSON also holds the numbers of a small run (``SMALL`` settings) made with the
same code, which the test suite repeats to notice when the code no longer gives the page's
numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_muon.benchmarks._quickstart import quickstart_data, quickstart_model, quiet_trainer
from lightning_muon.benchmarks.pages import replace_block
from lightning_muon.callbacks import SpectrumMonitor, UpdateNormMonitor, compare_runs

RUNS = {"AdamW": "adamw", "Muon": "muon", "NorMuon": "normuon"}
#: The Muon run is Keller Jordan's setting (the figure's page states it), not the class defaults.
MUON_SETTING = {"scale": "keller", "adamw_lr_ratio": 0.015}
#: Settings of the small run stored beside the page's numbers (appended to the page's command).
SMALL = ["--steps", "4", "--n-layer", "2", "--n-embd", "32", "--max-bytes", "200000"]
PAGE_BLOCK = "figure1"  # the generated block of docs/figure1.md


class LastLoss(pl.Callback):
    """The training loss of the last batch."""

    def __init__(self) -> None:
        self.loss = float("nan")

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: Any, outputs: Any, *args: Any
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.loss = float(loss)


def train(label: str, args: argparse.Namespace, data: pl.LightningDataModule) -> dict[str, Any]:
    """One run; returns its monitors and final loss."""
    pl.seed_everything(args.seed, verbose=False)
    every = args.steps // 2  # the middle and the last step
    norms = UpdateNormMonitor(every_n_steps=every, max_params=None, log_histograms=False)
    spectra = SpectrumMonitor(
        every_n_steps=every, max_params=None, sources=["update", "momentum"], log_images=False
    )
    last = LastLoss()
    baseline = (
        {
            "weight_decay": args.adamw_weight_decay,
            "optimizer_kwargs": {"betas": tuple(args.adamw_betas)},
        }
        if RUNS[label] == "adamw"
        else {"optimizer_kwargs": dict(MUON_SETTING)}
        if RUNS[label] == "muon"
        else {}
    )
    model = quickstart_model(
        RUNS[label],
        n_layer=args.n_layer,
        n_embd=args.n_embd,
        lr=getattr(args, f"lr_{RUNS[label]}"),
        lr_schedule="cosine",
        warmup_steps=min(20, args.steps // 10),
        **baseline,
    )
    quiet_trainer(args.steps, [norms, spectra, last]).fit(model, datamodule=data)
    return {"norms": norms, "spectra": spectra, "loss": last.loss}


def summarize(run: dict[str, Any], param: str, step: int) -> dict[str, float]:
    """κ and cv of ``param`` at step index ``step`` and their medians over all watched matrices."""
    spec = {
        r.param: r.stats.condition_number
        for r in run["spectra"].records
        if r.step == step and r.source == "update"
    }
    mom = {
        r.param: r.stats.condition_number
        for r in run["spectra"].records
        if r.step == step and r.source == "momentum"
    }
    cv = {r.param: r.stats.rows.cv for r in run["norms"].records if r.step == step}
    return {
        "condition_number": spec[param],
        "row_cv": cv[param],
        "momentum_condition_number": mom[param],
        "median_condition_number": statistics.median(spec.values()),
        "median_row_cv": statistics.median(cv.values()),
        "matrices": len(spec),
    }


def markdown_tables(result: dict[str, Any]) -> str:
    """The two tables of ``docs/figure1.md`` (middle and last step of the run), from ``result``."""
    head = "| optimizer | κ(ΔW), up-projection | cv, up-projection | median κ (all {n}) | median cv (all {n}) |"
    lines: list[str] = []
    for when in ("middle", "end"):
        n = result["runs"]["AdamW"][when]["matrices"]
        extra = " final training loss |" if when == "end" else ""
        lines += [head.format(n=n) + extra, "|---|---|---|---|---|" + ("---|" if extra else "")]
        for label, run in result["runs"].items():
            m = run[when]
            row = (
                f"| {label} | {m['condition_number']:.3g} | {m['row_cv']:.3f} | "
                f"{m['median_condition_number']:.3g} | {m['median_row_cv']:.3f} |"
            )
            lines.append(row + (f" {run['final_loss']:.3f} |" if extra else ""))
        if when == "middle":
            momentum = result["runs"]["Muon"]["middle"]["momentum_condition_number"]
            lines += [f"| raw momentum (Muon run) | {momentum:.3g} | — | — | — |", ""]
    return "\n".join(lines)


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, …, ``11th``, ``150th``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def page_block(result: dict[str, Any]) -> str:
    """The generated part of ``docs/figure1.md``: settings, then the tables with their headings."""
    cfg = result["settings"]
    steps, mid = result["steps"], result["steps"] // 2
    tables = markdown_tables(result).split("\n\n")
    b1, b2 = cfg["adamw_betas"]
    return "\n".join(
        [
            f"Generated by `{result['command']}` (Python {result['python']}, torch "
            f"{result['torch']}): {steps} steps per run; AdamW lr {cfg['lr_adamw']:g}, betas "
            f"({b1:g}, {b2:g}), weight decay {cfg['adamw_weight_decay']:g}; Muon lr "
            f"{cfg['lr_muon']:g}; NorMuon lr {cfg['lr_normuon']:g}; seed {cfg['seed']}.",
            "",
            f"At the {ordinal(mid)} optimizer step (step index {mid - 1} in the logs; the figure):",
            "",
            tables[0],
            "",
            f"At the {ordinal(steps)} step (index {steps - 1}, the end of the run):",
            "",
            tables[1],
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per run (even)")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--max-bytes", type=int, default=4_000_000)
    p.add_argument("--lr-adamw", type=float, default=3e-3)
    p.add_argument("--adamw-betas", type=float, nargs=2, default=[0.9, 0.95], help="the paper's")
    p.add_argument("--adamw-weight-decay", type=float, default=0.1, help="the paper's")
    p.add_argument("--lr-muon", type=float, default=0.02)
    p.add_argument("--lr-normuon", type=float, default=0.02, help="the quick-start recipe's lr")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", default="docs/img/figure1.png", help="figure path (.json written beside)"
    )
    p.add_argument("--page", type=Path, default=None, help="page whose generated block to rewrite")
    p.add_argument(
        "--no-small", action="store_true", help="skip the small check run stored in the JSON"
    )
    return p.parse_args(argv)


def measure(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train the three runs; returns the numbers and the runs (for the figure)."""
    if args.steps < 2 or args.steps % 2:
        raise ValueError(f"--steps must be an even number >= 2, got {args.steps}")
    torch.set_num_threads(args.threads)
    data = quickstart_data(max_bytes=args.max_bytes)
    runs = {label: train(label, args, data) for label in RUNS}
    param = f"model.transformer.h.{args.n_layer // 2}.mlp.fc_2.weight"
    mid, end = args.steps // 2 - 1, args.steps - 1  # step indices of the middle and last step
    result: dict[str, Any] = {
        "param": param,
        "steps": args.steps,
        "model": {"n_layer": args.n_layer, "n_embd": args.n_embd},
        "settings": {
            k: getattr(args, k)
            for k in ("lr_adamw", "adamw_betas", "adamw_weight_decay", "lr_muon", "lr_normuon")
        }
        | {"seed": args.seed, "max_bytes": args.max_bytes},
        "python": platform.python_version(),
        "torch": torch.__version__.split("+")[0],
        "runs": {
            label: {
                "final_loss": run["loss"],
                "middle": summarize(run, param, mid),
                "end": summarize(run, param, end),
            }
            for label, run in runs.items()
        },
    }
    return result, runs


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = parse_args(argv)
    result, runs = measure(args)
    result["command"] = " ".join(["python -m lightning_muon.benchmarks.figure1", *argv])
    mid = args.steps // 2 - 1
    fig = compare_runs(
        {label: [run["norms"], run["spectra"]] for label, run in runs.items()},
        param=result["param"],
        step=mid,
        momentum="Muon",
    )
    fig.suptitle(
        f"{result['param']}, step {mid} (the {ordinal(mid + 1)} of {args.steps})", fontsize=10
    )
    if not args.no_small:
        small_argv = [*_model_free(argv), *SMALL, "--no-small"]
        small, _ = measure(parse_args(small_argv))
        result["small"] = {"argv": small_argv, "runs": small["runs"]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    if args.page is not None:
        replace_block(args.page, PAGE_BLOCK, page_block(result))
    print(markdown_tables(result))
    return result


def _model_free(argv: Sequence[str]) -> list[str]:
    """``argv`` without the options :data:`SMALL` and the output options set."""
    drop = {"--steps", "--n-layer", "--n-embd", "--max-bytes", "--out", "--page"}
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in drop:
            skip = "=" not in a
            continue
        if a == "--no-small":
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    main()
