"""Cost of ``UpdateNormMonitor`` + ``SpectrumMonitor`` on the quick-start model.

Trains the quick-start ``GPTLanguageModel`` on the stdlib byte corpus for ``--steps`` optimizer
steps, alternately without and with both callbacks at their default intervals (norms every 50
steps, spectra every 100), for ``--rounds`` interleaved rounds (the order flips every round).
Each run times every training batch (``on_train_batch_start`` → ``on_train_batch_end``, so it
includes the callbacks' work) after ``--warmup`` batches. Reported:

* ``overhead``: median over rounds of ``time_with / time_without`` − 1 (summed batch times);
* ``off-interval ratio``: median batch time on steps where no callback is due, with / without;
* ``due-step extra``: mean batch time on due steps minus the median off-interval batch time.

Run::

    python -m lightning_muon.benchmarks.callback_overhead --steps 200 --rounds 3

Example (a smoke run):
    >>> from lightning_muon.benchmarks.callback_overhead import main
    >>> result = main(["--steps", "3", "--rounds", "1", "--warmup", "0", "--n-layer", "1",
    ...                "--n-embd", "32", "--max-bytes", "200000", "--quiet"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_muon.benchmarks._quickstart import quickstart_data, quickstart_model, quiet_trainer
from lightning_muon.callbacks import SpectrumMonitor, UpdateNormMonitor


class BatchTimer(pl.Callback):
    """Wall time of every training batch, keyed by ``global_step`` after the batch."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.times[trainer.global_step] = time.perf_counter() - self._start


def _run(
    args: argparse.Namespace, data: pl.LightningDataModule, monitored: bool
) -> dict[int, float]:
    pl.seed_everything(args.seed, verbose=False)
    timer = BatchTimer()
    callbacks: list[pl.Callback] = [timer]
    if monitored:
        callbacks = [UpdateNormMonitor(), SpectrumMonitor(log_images=False), timer]
    model = quickstart_model(args.optimizer, n_layer=args.n_layer, n_embd=args.n_embd)
    quiet_trainer(args.steps, callbacks).fit(model, datamodule=data)
    return {s: t for s, t in timer.times.items() if s > args.warmup}


def _is_due(step: int) -> bool:
    return (
        step % UpdateNormMonitor().every_n_steps == 0 or step % SpectrumMonitor().every_n_steps == 0
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds; returns the summary (see the module docstring)."""
    torch.set_num_threads(args.threads)
    data = quickstart_data(block_size=128, batch_size=16, max_bytes=args.max_bytes)
    runs: dict[bool, list[dict[int, float]]] = {False: [], True: []}
    for r in range(args.rounds):
        for monitored in (False, True) if r % 2 == 0 else (True, False):
            runs[monitored].append(_run(args, data, monitored))
            if not args.quiet:
                total = sum(runs[monitored][-1].values())
                print(f"round {r}: {'with' if monitored else 'without'} callbacks {total:.2f} s")
    ratios = [
        sum(w.values()) / sum(wo.values()) for w, wo in zip(runs[True], runs[False], strict=True)
    ]
    off_with = [t for run in runs[True] for s, t in run.items() if not _is_due(s)]
    off_without = [t for run in runs[False] for s, t in run.items() if not _is_due(s)]
    due_with = [t for run in runs[True] for s, t in run.items() if _is_due(s)]
    off_median = statistics.median(off_with) if off_with else float("nan")
    return {
        "optimizer": args.optimizer,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": args.threads,
        "time_without_s": statistics.median(sum(r.values()) for r in runs[False]),
        "time_with_s": statistics.median(sum(r.values()) for r in runs[True]),
        "overhead": statistics.median(ratios) - 1,
        "off_interval_ratio": off_median / statistics.median(off_without)
        if off_without
        else float("nan"),
        "due_step_extra_ms": 1000 * (statistics.fmean(due_with) - off_median)
        if due_with
        else float("nan"),
        "median_step_ms": 1000 * statistics.median(off_without) if off_without else float("nan"),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing")
    p.add_argument("--optimizer", default="normuon", help="optimizer name (quick-start default)")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--max-bytes", type=int, default=4_000_000, help="corpus size cap")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings steady)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the summary to this file")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = measure(args)
    if not args.quiet:
        print(
            f"quick-start model, {args.optimizer}, {args.steps} steps x {args.rounds} rounds, "
            f"{args.threads} thread(s)\n"
            f"  median time without callbacks: {result['time_without_s']:.2f} s\n"
            f"  median time with callbacks:    {result['time_with_s']:.2f} s\n"
            f"  overhead (median paired ratio - 1): {100 * result['overhead']:+.2f} %\n"
            f"  off-interval step time ratio:  {result['off_interval_ratio']:.3f}\n"
            f"  extra time on a due step:      {result['due_step_extra_ms']:.1f} ms "
            f"(median step {result['median_step_ms']:.1f} ms)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
