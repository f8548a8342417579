"""Training-efficiency benchmark: how many of AdamW's steps each Muon-family optimizer needs.

Trains the same small litgpt GPT on the same byte-level standard-library source with the same
schedule (litgpt's warmup + cosine, every group's lr rewritten each step, gradient clipping 1.0)
using AdamW, Muon, NorMuon, AdaMuon, Muon-NSR, Muon-VS and SpectralMuon (p = 1/2), and reports the
papers' metric: the percentage of AdamW's steps each optimizer needs to reach AdamW's final
validation loss (see :mod:`lightning_muon.benchmarks.efficiency_report`).

Protocol, identical for every optimizer:

1. **Grid** on the first seed: the adaptive 2-D search of
   :mod:`~lightning_muon.benchmarks.efficiency_grid` over the matrix lr and the AdamW-branch lr
   (an absolute lr; the optimizer gets ``adamw_lr_ratio = adamw_lr / lr``), factors of 2, from
   each optimizer's centre in :data:`GRIDS` until the best cell is bracketed on both axes. AdamW
   (one lr) gets the same search in 1-D. The optimizers of ``--no-grid`` (default: SpectralMuon,
   about twice the step time, and Muon-VS, whose update differs from Muon-NSR's by the missing α
   only) skip it: Muon-VS takes Muon-NSR's best cell (:data:`BORROWED_CELL`), another optimizer
   the centre of its grid (unsearched); SpectralMuon is measured at its defaults.
2. **Seeds**: the best cell of each grid on every seed (the seed sets weights and batch order; the
   validation windows are fixed). AdamW's final loss of each seed is the target of that seed.
3. **Reference and defaults**: the one-lr Muon + AdamW hybrid (:data:`HYBRID`) on every seed; each
   optimizer at its 0.1 defaults (:data:`V01_DEFAULTS`) at its own default lr and at AdamW's tuned
   lr; the defaults of :data:`DEFAULTS` (passed explicitly) on every seed and at AdamW's
   tuned lr.
4. **Ablation**: AdaMuon's best cell with one setting changed at a time (:data:`ADAMUON_ABLATION`).

Outputs ``--out`` (JSON with every run's curves), the same name with ``.md`` (tables) and ``.png``
(loss curves), and ``.runs.jsonl`` (a cache: rerunning the same command reuses finished runs, so
an interrupted benchmark resumes). The documentation page is generated from the JSON by
:mod:`~lightning_muon.benchmarks.efficiency_page`.

Example (a smoke run; the defaults are the documented 400-step CPU setting)::

    python -m lightning_muon.benchmarks.efficiency --out runs/efficiency.json
    python -m lightning_muon.benchmarks.efficiency --steps 20 --eval-every 10 --n-layer 1 \\
        --n-embd 32 --optimizers adamw normuon --seeds 0 --out runs/smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..core.ns_dtype import DTYPES, ENV_VAR
from .efficiency_config import (
    ADAMUON_ABLATION,
    BORROWED_CELL,
    DEFAULTS,
    GRIDS,
    HYBRID,
    OPTIMIZERS,
    PRESETS,
    V01_DEFAULTS,
    run_key,
)
from .efficiency_grid import Grid, best_cell, search
from .efficiency_report import markdown_report, plot_curves, plot_inputs, summarize
from .lm_training import (
    BASELINE,
    BenchData,
    ModelSpec,
    TrainSpec,
    interleaved_step_times,
    train_run,
)

Job = tuple[str, float, int, dict[str, Any]]
_DATA: BenchData | None = None


def _init_worker(threads: int, data_kwargs: dict[str, Any], ns_dtype: str) -> None:
    global _DATA
    os.environ[ENV_VAR] = ns_dtype  # before any optimizer decides its default
    torch.set_num_threads(threads)
    _DATA = BenchData.load(**data_kwargs)


def _run(payload: tuple[Job, dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    (name, lr, seed, kwargs), model_kwargs, train_kwargs = payload
    assert _DATA is not None
    t0 = time.perf_counter()
    spec = (ModelSpec(**model_kwargs), TrainSpec(**train_kwargs), _DATA)
    out = train_run(name, lr, seed, *spec, kwargs=kwargs).to_dict()
    out["wall_s"] = time.perf_counter() - t0
    return out


class Runner:
    """Runs jobs (in worker processes when ``jobs > 1``) and caches results in a JSONL file."""

    def __init__(self, args: argparse.Namespace, cache: Path) -> None:
        self.model_kwargs = dict(
            n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, block_size=args.block_size
        )
        self.train_kwargs = asdict(
            TrainSpec(
                steps=args.steps, batch_size=args.batch_size, warmup_steps=args.warmup_steps,
                eval_every=args.eval_every, device=args.device, autocast_bf16=args.bf16,
            )
        )  # fmt: skip
        self.data_kwargs = dict(
            max_bytes=args.max_bytes,
            block_size=args.block_size,
            val_windows=args.val_windows,
            data_dir=args.data_dir,
        )
        self.ns_dtype = args.ns_dtype
        self.key = {
            "model": self.model_kwargs,
            "train": self.train_kwargs,
            "data": self.data_kwargs,
            "ns_dtype": args.ns_dtype,
        }
        self.cache = cache
        self.threads = args.threads
        self.cached_only = args.cached_only
        self.done: dict[tuple[str, str, int, str], dict[str, Any]] = {}
        if cache.exists():
            for line in cache.read_text().splitlines():
                entry = json.loads(line)
                if entry["key"] == self.key:
                    run = entry["run"]
                    self.done[run_key(run["optimizer"], run["lr"], run["seed"], run["kwargs"])] = (
                        run
                    )
        context = torch.multiprocessing.get_context("spawn")
        self.pool = (
            ProcessPoolExecutor(
                args.jobs, mp_context=context, initializer=_init_worker,
                initargs=(args.threads, self.data_kwargs, args.ns_dtype),
            )
            if args.jobs > 1
            else None
        )  # fmt: skip
        if self.pool is None:
            _init_worker(args.threads, self.data_kwargs, args.ns_dtype)

    def run(self, jobs: Iterable[Job]) -> list[dict[str, Any]]:
        """Results of ``(optimizer, lr, seed, kwargs)`` jobs, in order (cached ones are not rerun).

        With ``--cached-only`` nothing is trained and jobs not in the cache are left out."""
        jobs = list(jobs)
        if self.cached_only:
            return [self.done[run_key(*j)] for j in jobs if run_key(*j) in self.done]
        todo = list({run_key(*j): j for j in jobs if run_key(*j) not in self.done}.values())
        payload = [(j, self.model_kwargs, self.train_kwargs) for j in todo]
        results = self.pool.map(_run, payload) if self.pool else map(_run, payload)
        for run in results:
            self.done[run_key(run["optimizer"], run["lr"], run["seed"], run["kwargs"])] = run
            with self.cache.open("a") as fh:
                fh.write(json.dumps({"key": self.key, "run": run}) + "\n")
            extra = ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in run["kwargs"].items())  # fmt: skip
            print(
                f"[{time.strftime('%H:%M:%S')}] {run['optimizer']:>13} lr={run['lr']:<8.3g} "
                f"seed={run['seed']} {extra}  final val {run['final_val_loss']:.4f}  "
                f"{1e3 * run['step_time_s']:.0f} ms/step  {run['wall_s']:.0f} s",
                flush=True,
            )
        return [self.done[run_key(*j)] for j in jobs]

    def step_times(
        self, configs: dict[str, tuple[str, float, dict[str, Any]]], rounds: int
    ) -> dict[str, float]:
        """Interleaved step times of ``configs`` (label → (optimizer, lr, kwargs)), in this process."""
        if _DATA is None:
            _init_worker(self.threads, self.data_kwargs, self.ns_dtype)
        assert _DATA is not None
        spec = (ModelSpec(**self.model_kwargs), TrainSpec(**self.train_kwargs), _DATA)
        return interleaved_step_times(configs, *spec, rounds)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def run_grids(
    runner: Runner, grids: dict[str, Grid], seed: int, max_extensions: int
) -> dict[str, dict]:
    """The adaptive search on every grid at once; returns label → {(i, j): run}."""
    found: dict[str, dict] = {label: {} for label in grids}

    def evaluate(todo):
        keys = {run_key(*grids[label].job(c, seed)): (label, c) for label, c in todo}
        losses = {}
        for run in runner.run(grids[label].job(c, seed) for label, c in todo):
            label, c = keys[run_key(run["optimizer"], run["lr"], run["seed"], run["kwargs"])]
            found[label][c] = run  # with --cached-only, the cells not trained yet are missing
            losses[(label, c)] = run["final_val_loss"]
        return losses

    search({label: g.search_axes for label, g in grids.items()}, evaluate, max_extensions)
    return found


def plan_after_grid(
    args: argparse.Namespace, grids: dict[str, Grid], found: dict[str, dict]
) -> dict[str, list[tuple[str, Job]]]:
    """Every run after the grid, by section: (row label, job)."""
    seeds = args.seeds
    best = {label: grids[label].job(best_cell({c: r["final_val_loss"] for c, r in cells.items()}), 0)
            for label, cells in found.items()}  # fmt: skip
    adamw_lr = best[BASELINE][1]
    names = [n for n in args.optimizers if n != BASELINE]
    plan: dict[str, list[tuple[str, Job]]] = {"tuned": [], "defaults": [], "ablation": []}
    for name in args.optimizers:  # without a grid: the lender's best cell, or its own centre
        if name in best or name not in GRIDS or name == "spectral_muon":
            continue
        lender = BORROWED_CELL.get(name)
        if lender in best:
            _, lr, _, kwargs = best[lender]
            best[name] = (name, lr, 0, {**kwargs, "scale": GRIDS[name][3]["scale"]})
        else:
            best[name] = Grid(name, *GRIDS[name]).job((0, 0), 0)
    for label, (name, lr, _, kwargs) in best.items():
        plan["tuned"] += [(label, (name, lr, s, kwargs)) for s in seeds]
    if "muon" in args.optimizers:
        plan["tuned"] += [("hybrid", (HYBRID[0], HYBRID[1], s, HYBRID[2])) for s in seeds]
    for name in names:
        lr, kwargs = V01_DEFAULTS[name]
        plan["defaults"] += [
            (f"{name}|0.1 defaults", (name, lr, seeds[0], kwargs)),
            (f"{name}|0.1 defaults, AdamW's lr", (name, adamw_lr, seeds[0], kwargs)),
        ]
        if name in DEFAULTS:
            lr, kwargs = DEFAULTS[name]
            plan["tuned"] += [(f"{name} (defaults)", (name, lr, s, kwargs)) for s in seeds]
            plan["defaults"].append(
                (f"{name}|defaults, AdamW's lr", (name, adamw_lr, seeds[0], kwargs))
            )
    if "adamuon" in best and args.ablation:
        name, lr, _, kwargs = best["adamuon"]
        plan["ablation"] = [("grid's best", (name, lr, seeds[0], kwargs))] + [
            (label, (name, lr, seeds[0], {**kwargs, **change}))
            for label, change in ADAMUON_ABLATION.items()
        ]
    return plan


def _priority(job: Job, plan: dict[str, list[tuple[str, Job]]], seeds: list[int]) -> int:
    """Order of the runs after the grid, so that a benchmark cut short has the most useful ones:
    the first seed of every tuned row (borrowed cells last), Muon's defaults at AdamW's
    lr, the first ablation change, the second seed of AdamW and Muon-NSR (a first look at the
    spread over seeds), the other defaults at AdamW's lr, the other ablation changes and
    the 0.1 defaults at AdamW's lr, the second seed of the others, the further seeds, then the defaults at their own lr."""
    first_change = next(iter(ADAMUON_ABLATION), None)
    ranks = []
    for section, pairs in plan.items():
        for label, j in pairs:
            if j != job:
                continue
            if section == "tuned":
                if job[2] == seeds[0]:
                    ranks.append(4 if label in BORROWED_CELL else 0)
                elif job[2] in seeds[:2]:
                    ranks.append(3 if label in ("adamw", "muon_nsr") else 6)
                else:
                    ranks.append(7)
            elif section == "ablation":
                ranks.append(2 if label in (first_change, "grid's best") else 5)
            elif label == "muon|defaults, AdamW's lr":
                ranks.append(1)
            else:
                ranks.append(
                    3
                    if label.endswith("defaults, AdamW's lr")
                    else 5
                    if label.endswith("AdamW's lr")
                    else 8
                )
    return min(ranks)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    preset = PRESETS[pre.parse_known_args(argv)[0].preset]
    p = argparse.ArgumentParser(
        prog="python -m lightning_muon.benchmarks.efficiency",
        description=__doc__.split("\n\n")[0],
        parents=[pre],
    )
    p.add_argument("--out", type=Path, required=True, help="JSON output; .md and .png beside it")
    p.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    p.add_argument("--max-extensions", type=int, default=6, help="grid extension rounds")
    p.add_argument("--no-grid", nargs="*", default=["spectral_muon", "muon_vs"], choices=OPTIMIZERS,
                   help="optimizers measured without their own grid (see BORROWED_CELL)")  # fmt: skip
    p.add_argument("--adamw-axis-only", nargs="*", default=["muon_keller"], choices=sorted(GRIDS),
                   help="search only the AdamW-branch lr of these (the matrix lr at the centre)")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=preset["seeds"])
    for name in ("n_layer", "n_embd", "n_head", "block_size", "steps", "batch_size"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=preset[name])
    for name in ("warmup_steps", "eval_every", "val_windows"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=preset[name])
    p.add_argument("--max-bytes", type=int, default=preset["max_bytes"])
    p.add_argument("--data-dir", default=None, help="folder of text files (default: the stdlib)")
    p.add_argument("--device", default=preset["device"])
    p.add_argument("--ns-dtype", choices=sorted(DTYPES), default=preset["ns_dtype"],
                   help="Newton-Schulz compute dtype of every run (part of the cache key)")  # fmt: skip
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=preset["bf16"])
    p.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True,
                   help="run the AdaMuon ablation")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    p.add_argument("--cached-only", action="store_true",
                   help="train nothing: report the runs already in the cache")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument(
        "--timing-rounds",
        type=int,
        default=7,
        help="interleaved timing rounds of the tuned configurations (0: use per-run medians)",
    )
    args = p.parse_args(argv)
    if BASELINE not in args.optimizers:
        p.error("--optimizers must include the baseline 'adamw'")
    if args.jobs < 1 or args.threads < 1:
        p.error(f"--jobs and --threads must be >= 1, got {args.jobs} and {args.threads}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device} but CUDA is not available (use --preset cpu)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write the JSON, markdown and plot; returns the summary."""
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runner = Runner(args, args.out.with_suffix(".runs.jsonl"))
    grids = {
        label: Grid(
            label, name, lr0, a0, kwargs, "adamw" if label in args.adamw_axis_only else "both"
        )
        for label, (name, lr0, a0, kwargs) in GRIDS.items()
        if name in args.optimizers and name not in args.no_grid
    }
    try:
        found = run_grids(runner, grids, args.seeds[0], args.max_extensions)
        found = {label: cells for label, cells in found.items() if cells}  # --cached-only: none yet
        plan = plan_after_grid(args, grids, found)
        runner.run(sorted((job for section in plan.values() for _, job in section),
                          key=lambda job: _priority(job, plan, args.seeds)))  # fmt: skip
        tuned = {label: job for label, job in plan["tuned"] if job[2] == args.seeds[0]}
        configs = {label: (n, lr, kw) for label, (n, lr, _, kw) in tuned.items()}
        timed = args.timing_rounds > 0  # also with --cached-only: timing trains nothing
        step_times = runner.step_times(configs, args.timing_rounds) if timed else None
    finally:
        runner.close()
    config = {
        **runner.key,
        "seeds": args.seeds,
        "max_extensions": args.max_extensions,
        "no_grid": args.no_grid,
        "adamw_axis_only": args.adamw_axis_only,
        "jobs": args.jobs,
        "threads": args.threads,
        "timing": "interleaved" if timed else "per-run medians",
        "cached_only": args.cached_only,
        "command": "python -m lightning_muon.benchmarks.efficiency "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "torch": torch.__version__,
    }
    summary = summarize(grids, found, plan, runner.run, config, step_times)
    runs = list({run_key(r["optimizer"], r["lr"], r["seed"], r["kwargs"]): r
                 for r in summary.pop("_runs")}.values())  # fmt: skip
    summary["elapsed_s"] = time.perf_counter() - t0
    summary["compute_s"] = sum(r["wall_s"] for r in runs)  # cached runs included
    args.out.write_text(json.dumps({**summary, "runs": runs}, indent=1))
    args.out.with_suffix(".md").write_text(markdown_report(summary))
    plot_curves(*plot_inputs(summary, runs), args.out.with_suffix(".png"))
    print(markdown_report(summary))
    print(
        f"elapsed {summary['elapsed_s'] / 60:.1f} min (training runs, cached ones included: "
        f"{summary['compute_s'] / 60:.1f} min); wrote {args.out} (.md, .png)"
    )
    return summary


if __name__ == "__main__":
    main()
