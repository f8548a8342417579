"""Cost of ``UpdateNormMonitor`` + ``SpectrumMonitor`` on the quick-start model.

Trains the quick-start ``GPTLanguageModel`` on the stdlib byte corpus for ``--steps`` optimizer
steps, alternately without and with both callbacks at their default intervals (norms every 50
steps, spectra every 100), for ``--rounds`` interleaved rounds (the order flips every round).
Each run times every training batch (``on_train_batch_start`` → ``on_train_batch_end``, so it
includes the callbacks' work) after ``--warmup`` batches, on the process CPU clock
(``--clock cpu``, default: insensitive to other processes competing for the cores) or the wall
clock (``--clock wall``; the only meaningful one with ``--accelerator gpu``, where work is
asynchronous: batches are then synchronized before timing). Reported:

* ``overhead``: median over rounds of ``time_with / time_without`` − 1 (summed batch times);
* ``attributable overhead``: the extra time of the due steps (below), summed, over the median
  time without callbacks — what the callbacks add, free of run-to-run drift;
* ``off-interval ratio``: median batch time on steps where no callback is due, with / without;
* ``due-step extra``: mean batch time on due steps minus the median off-interval batch time,
  separately for steps where only the norms are due and where the spectra are due too.

Run::

    python -m lightning_muon.benchmarks.callback_overhead --steps 200 --rounds 3
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

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
NORM_EVERY = UpdateNormMonitor().every_n_steps
SPECTRUM_EVERY = SpectrumMonitor().every_n_steps


class BatchTimer(pl.Callback):
    """Time of every training batch on one clock, keyed by ``global_step`` after the batch."""

    def __init__(self, clock: str = "cpu") -> None:
        self.clock = CLOCKS[clock]
        self.times: dict[int, float] = {}
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        _synchronize()
        self._start = self.clock()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        _synchronize()
        self.times[trainer.global_step] = self.clock() - self._start


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _run(
    args: argparse.Namespace, data: pl.LightningDataModule, monitored: bool
) -> dict[int, float]:
    pl.seed_everything(args.seed, verbose=False)
    timer = BatchTimer(args.clock)
    callbacks: list[pl.Callback] = [timer]
    if monitored:  # the timer runs last, so a batch's time includes the monitors' work
        callbacks = [UpdateNormMonitor(), SpectrumMonitor(log_images=False), timer]
    model = quickstart_model(args.optimizer, n_layer=args.n_layer, n_embd=args.n_embd)
    quiet_trainer(args.steps, callbacks, accelerator=args.accelerator).fit(model, datamodule=data)
    return {s: t for s, t in timer.times.items() if s > args.warmup}


def _kind(step: int) -> str:
    if step % SPECTRUM_EVERY == 0:
        return "spectrum"
    return "norm" if step % NORM_EVERY == 0 else "off"


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
    nan = float("nan")

    def times(monitored: bool, kind: str) -> list[float]:
        return [t for run in runs[monitored] for s, t in run.items() if _kind(s) == kind]

    off_with, off_without = times(True, "off"), times(False, "off")
    off_median = statistics.median(off_with) if off_with else nan
    extra = {
        kind: statistics.fmean(times(True, kind)) - off_median if times(True, kind) else 0.0
        for kind in ("norm", "spectrum")
    }
    counts = {kind: sum(1 for s in runs[True][0] if _kind(s) == kind) for kind in extra}
    time_without = statistics.median(sum(r.values()) for r in runs[False])
    ratios = [
        sum(w.values()) / sum(wo.values()) for w, wo in zip(runs[True], runs[False], strict=True)
    ]
    return {
        "optimizer": args.optimizer,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": args.threads,
        "clock": args.clock,
        "time_without_s": time_without,
        "time_with_s": statistics.median(sum(r.values()) for r in runs[True]),
        "overhead": statistics.median(ratios) - 1,
        "attributable_overhead": sum(counts[k] * extra[k] for k in extra) / time_without,
        "off_interval_ratio": off_median / statistics.median(off_without) if off_without else nan,
        "norm_due_extra_ms": 1000 * extra["norm"] if counts["norm"] else nan,
        "spectrum_due_extra_ms": 1000 * extra["spectrum"] if counts["spectrum"] else nan,
        "median_step_ms": 1000 * statistics.median(off_without) if off_without else nan,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing")
    p.add_argument("--optimizer", default="normuon", help="optimizer name")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--max-bytes", type=int, default=4_000_000, help="corpus size cap")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings steady)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="CPU or wall time")
    p.add_argument(
        "--accelerator", default="cpu", help="Lightning accelerator (use --clock wall on gpu)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the summary to this file")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints a summary and returns it as a dict."""
    args = parse_args(argv)
    result = measure(args)
    if not args.quiet:
        print(
            f"quick-start model, {args.optimizer}, {args.steps} steps x {args.rounds} rounds, "
            f"{args.threads} thread(s), {args.clock} clock\n"
            f"  median time without callbacks: {result['time_without_s']:.2f} s\n"
            f"  median time with callbacks:    {result['time_with_s']:.2f} s\n"
            f"  overhead (median paired ratio - 1): {100 * result['overhead']:+.2f} %\n"
            f"  attributable overhead: {100 * result['attributable_overhead']:+.2f} %\n"
            f"  off-interval step time ratio:  {result['off_interval_ratio']:.3f}\n"
            f"  extra time, norms due:         {result['norm_due_extra_ms']:.1f} ms\n"
            f"  extra time, norms+spectra due: {result['spectrum_due_extra_ms']:.1f} ms\n"
            f"  median step without callbacks: {result['median_step_ms']:.1f} ms"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
