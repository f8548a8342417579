"""Training-efficiency benchmark: how many of AdamW's steps each Muon-family optimizer needs.

Trains the same small litgpt GPT on the same byte-level standard-library source with the same
schedule (litgpt's warmup + cosine, every group's lr rewritten each step, gradient clipping 1.0)
using AdamW, Muon, NorMuon, AdaMuon, Muon-NSR, Muon-VS and SpectralMuon (p = 1/2), and reports the
papers' metric: the percentage of AdamW's steps each optimizer needs to reach AdamW's final
validation loss (see :mod:`lightning_muon.benchmarks.efficiency_report`).

Protocol, identical for every optimizer:

1. **Sweep** on the first seed: lr = (the constructor's default lr, torch's 1e-3 for AdamW) ×
   each of ``--lr-multipliers`` (default ½, 1, 2). If the best lr is at an edge of the grid, the
   grid is extended past that edge by the same factor, at most ``--max-extensions`` times, so every
   optimizer ends with an interior optimum when one exists.
2. **Choose** the lr with the lowest final validation loss.
3. **Repeat** the chosen lr on the other seeds (the seed sets weights and batch order; the
   validation windows are fixed). AdamW's final loss of each seed is the target of that seed.

Outputs ``--out`` (JSON with every run's curves), the same name with ``.md`` (tables) and ``.png``
(loss curves), and ``.runs.jsonl`` (a cache: rerunning the same command reuses finished runs).

Example (a smoke run; the defaults are the documented 400-step CPU setting)::

    python -m lightning_muon.benchmarks.efficiency --out runs/efficiency.json
    python -m lightning_muon.benchmarks.efficiency --steps 20 --eval-every 10 --n-layer 1 \\
        --n-embd 32 --optimizers adamw normuon --seeds 0 --out runs/smoke.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .efficiency_report import markdown_report, plot_curves, spread, steps_to_reach
from .lm_training import (
    BASELINE,
    BenchData,
    ModelSpec,
    TrainSpec,
    default_lr,
    interleaved_step_times,
    train_run,
)

OPTIMIZERS = ("adamw", "muon", "normuon", "adamuon", "muon_nsr", "muon_vs", "spectral_muon")
PRESETS: dict[str, dict[str, Any]] = {
    # 4 layers x 128 wide, 512 tokens/step, 400 steps, 1 thread: ~30 s per run on a 2-core CPU.
    "cpu": dict(
        n_layer=4, n_embd=128, n_head=4, block_size=128, steps=400, batch_size=4,
        warmup_steps=20, eval_every=20, val_windows=64, max_bytes=4_000_000, seeds=[0, 1],
        device="cpu", bf16=False,
    ),
    # The same with 1024 tokens/step (the recipes/litgpt/tiny setting): about twice the time.
    "cpu-long": dict(
        n_layer=4, n_embd=128, n_head=4, block_size=128, steps=400, batch_size=8,
        warmup_steps=20, eval_every=20, val_windows=64, max_bytes=4_000_000, seeds=[0, 1],
        device="cpu", bf16=False,
    ),
    # GPT-2-small class (12 x 768, context 1024), 16k tokens/step, 1000 steps (1.4 passes over
    # the 12 MB standard library), bf16 autocast.
    "gpu": dict(
        n_layer=12, n_embd=768, n_head=12, block_size=1024, steps=1000, batch_size=16,
        warmup_steps=100, eval_every=50, val_windows=256, max_bytes=None, seeds=[0, 1, 2],
        device="cuda", bf16=True,
    ),
}  # fmt: skip

_DATA: BenchData | None = None


def _init_worker(threads: int, data_kwargs: dict[str, Any]) -> None:
    global _DATA
    torch.set_num_threads(threads)
    _DATA = BenchData.load(**data_kwargs)


def _run(job: tuple[str, float, int, dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    name, lr, seed, model_kwargs, train_kwargs = job
    assert _DATA is not None
    t0 = time.perf_counter()
    result = train_run(name, lr, seed, ModelSpec(**model_kwargs), TrainSpec(**train_kwargs), _DATA)
    out = result.to_dict()
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
        self.key = {
            "model": self.model_kwargs,
            "train": self.train_kwargs,
            "data": self.data_kwargs,
        }
        self.cache = cache
        self.threads = args.threads
        self.done: dict[tuple[str, str, int], dict[str, Any]] = {}
        if cache.exists():
            for line in cache.read_text().splitlines():
                entry = json.loads(line)
                if entry["key"] == self.key:
                    run = entry["run"]
                    self.done[(run["optimizer"], repr(run["lr"]), run["seed"])] = run
        self.pool = (
            ProcessPoolExecutor(
                args.jobs,
                mp_context=torch.multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(args.threads, self.data_kwargs),
            )
            if args.jobs > 1
            else None
        )
        if self.pool is None:
            _init_worker(args.threads, self.data_kwargs)

    def run(self, jobs: Iterable[tuple[str, float, int]]) -> list[dict[str, Any]]:
        """Results of ``(optimizer, lr, seed)`` jobs, in order (cached ones are not rerun)."""
        jobs = list(jobs)
        todo = [j for j in jobs if (j[0], repr(j[1]), j[2]) not in self.done]
        payload = [(*j, self.model_kwargs, self.train_kwargs) for j in todo]
        results = self.pool.map(_run, payload) if self.pool else map(_run, payload)
        for run in results:
            self.done[(run["optimizer"], repr(run["lr"]), run["seed"])] = run
            with self.cache.open("a") as fh:
                fh.write(json.dumps({"key": self.key, "run": run}) + "\n")
            print(
                f"[{time.strftime('%H:%M:%S')}] {run['optimizer']:>13} lr={run['lr']:<8.3g} "
                f"seed={run['seed']} final val {run['final_val_loss']:.4f}  "
                f"{1e3 * run['step_time_s']:.0f} ms/step  {run['wall_s']:.0f} s",
                flush=True,
            )
        return [self.done[(j[0], repr(j[1]), j[2])] for j in jobs]

    def step_times(self, lrs: dict[str, float], rounds: int) -> dict[str, float]:
        """Interleaved step times of the chosen configurations, measured in this process."""
        global _DATA
        if _DATA is None:
            _init_worker(self.threads, self.data_kwargs)
        assert _DATA is not None
        return interleaved_step_times(
            lrs, ModelSpec(**self.model_kwargs), TrainSpec(**self.train_kwargs), _DATA, rounds
        )

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def sweep(
    runner: Runner, names: list[str], multipliers: list[float], seed: int, max_extensions: int
) -> dict[str, list[dict[str, Any]]]:
    """The lr sweep on ``seed``, extending the grid past an edge that holds the best lr."""
    grids = {n: sorted(default_lr(n) * m for m in multipliers) for n in names}
    up = multipliers[-1] / multipliers[-2] if len(multipliers) > 1 else 2.0
    down = multipliers[1] / multipliers[0] if len(multipliers) > 1 else 2.0
    results = {n: [] for n in names}
    pending = {n: list(g) for n, g in grids.items()}
    for _ in range(max_extensions + 1):
        jobs = [(n, lr, seed) for n in names for lr in pending[n]]
        if not jobs:
            break
        for run in runner.run(jobs):
            results[run["optimizer"]].append(run)
        pending = {n: [] for n in names}
        for n in names:
            runs = sorted(results[n], key=lambda r: r["lr"])
            best = min(runs, key=lambda r: r["final_val_loss"])
            if not math.isfinite(best["final_val_loss"]):
                continue
            if best is runs[-1]:
                pending[n] = [runs[-1]["lr"] * up]
            elif best is runs[0]:
                pending[n] = [runs[0]["lr"] / down]
    return results


def summarize(
    sweeps: dict[str, list[dict[str, Any]]],
    runs: list[dict[str, Any]],
    config: dict[str, Any],
    step_times: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The main table: per optimizer, the chosen lr's metric, final loss and step time over seeds.

    ``step_times`` (seconds, interleaved measurement) replaces the per-run median step times,
    which were measured at different moments of a possibly shared machine."""
    seeds, steps = config["seeds"], config["train"]["steps"]
    chosen = {n: min(rs, key=lambda r: r["final_val_loss"])["lr"] for n, rs in sweeps.items()}
    by = {(r["optimizer"], r["lr"], r["seed"]): r for r in runs}
    targets = {s: by[(BASELINE, chosen[BASELINE], s)]["final_val_loss"] for s in seeds}
    times = step_times or {
        n: statistics.median(by[(n, lr, s)]["step_time_s"] for s in seeds)
        for n, lr in chosen.items()
    }
    table = []
    for name, lr in chosen.items():
        mine = [by[(name, lr, s)] for s in seeds]
        reached = [
            steps_to_reach(r["eval_steps"], r["val_losses"], targets[r["seed"]])
            for r in mine
            if not r["diverged"]
        ]
        reached = [x / steps for x in reached if x is not None]
        finals = [r["final_val_loss"] for r in mine]
        time_s = times[name]
        table.append(
            {
                "optimizer": name,
                "lr": lr,
                "fraction": spread(reached) if reached else None,
                "reached_seeds": len(reached),
                "final_val_loss": spread(finals),
                "step_time_ms": 1e3 * time_s,
                "time_ratio": time_s / times[BASELINE],
            }
        )
    return {
        "config": config,
        "targets": targets,
        "target_mean": statistics.fmean(targets.values()),
        "table": table,
        "sweep": {
            n: [{"lr": r["lr"], "final_val_loss": r["final_val_loss"]} for r in rs]
            for n, rs in sweeps.items()
        },
    }


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
    p.add_argument("--lr-multipliers", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    p.add_argument("--max-extensions", type=int, default=4)
    p.add_argument("--seeds", nargs="+", type=int, default=preset["seeds"])
    for name in ("n_layer", "n_embd", "n_head", "block_size", "steps", "batch_size"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=preset[name])
    for name in ("warmup_steps", "eval_every", "val_windows"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=preset[name])
    p.add_argument("--max-bytes", type=int, default=preset["max_bytes"])
    p.add_argument("--data-dir", default=None, help="folder of text files (default: the stdlib)")
    p.add_argument("--device", default=preset["device"])
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=preset["bf16"])
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads per process (1: see the docs)"
    )
    p.add_argument(
        "--timing-rounds",
        type=int,
        default=7,
        help="interleaved timing rounds of the chosen configurations (0: use per-run medians)",
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
    try:
        sweeps = sweep(
            runner, args.optimizers, args.lr_multipliers, args.seeds[0], args.max_extensions
        )
        chosen = {n: min(rs, key=lambda r: r["final_val_loss"])["lr"] for n, rs in sweeps.items()}
        repeats = runner.run((n, lr, s) for s in args.seeds[1:] for n, lr in chosen.items())
        step_times = runner.step_times(chosen, args.timing_rounds) if args.timing_rounds else None
    finally:
        runner.close()
    runs = [r for rs in sweeps.values() for r in rs] + repeats
    config = {
        **runner.key,
        "seeds": args.seeds,
        "lr_multipliers": args.lr_multipliers,
        "max_extensions": args.max_extensions,
        "jobs": args.jobs,
        "threads": args.threads,
        "timing": "interleaved" if args.timing_rounds else "per-run medians",
        "command": "python -m lightning_muon.benchmarks.efficiency " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
    }
    summary = summarize(sweeps, runs, config, step_times)
    summary["elapsed_s"] = time.perf_counter() - t0
    summary["compute_s"] = sum(r["wall_s"] for r in runs)  # cached runs included
    args.out.write_text(json.dumps({**summary, "runs": runs}, indent=1))
    args.out.with_suffix(".md").write_text(markdown_report(summary))
    plot_curves(summary, runs, args.out.with_suffix(".png"))
    print(markdown_report(summary))
    print(
        f"elapsed {summary['elapsed_s'] / 60:.1f} min (training runs, cached ones included: "
        f"{summary['compute_s'] / 60:.1f} min); wrote {args.out} (.md, .png)"
    )
    return summary


if __name__ == "__main__":
    main()
