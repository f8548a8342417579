"""Short learning-rate sweep on the quick-start model, used to pick the ``recipes/`` values.

Each spec ``NAME:LR[:KEY=VALUE,...]`` trains the quick-start ``GPTLanguageModel`` (4 layers, width
128, batches of 16 × 128 bytes of the stdlib corpus) from the same seed for ``--steps`` optimizer
steps with linear warmup (``--warmup`` steps) then cosine decay to zero, and reports the mean
training loss of the last 10 steps (nats per byte) and the CPU seconds per step. Extra
``KEY=VALUE`` pairs are constructor arguments (``muon:0.05:adamw_lr_ratio=0.06``). One seed and a
short run: a guide to the order of magnitude of ``lr``, not a ranking of optimizers.

Run::

    python -m lightning_muon.benchmarks.lr_sweep normuon:0.01 normuon:0.02 muon:0.05:adamw_lr_ratio=0.06
"""

from __future__ import annotations

import argparse
import ast
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_muon.benchmarks._quickstart import quickstart_data, quickstart_model, quiet_trainer


def parse_spec(spec: str) -> tuple[str, float, dict[str, Any]]:
    """``"muon:0.05:adamw_lr_ratio=0.06"`` → ``("muon", 0.05, {"adamw_lr_ratio": 0.06})``."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"spec {spec!r} must look like NAME:LR or NAME:LR:KEY=VALUE,...")
    extra: dict[str, Any] = {}
    if len(parts) == 3 and parts[2]:
        for item in parts[2].split(","):
            key, _, value = item.partition("=")
            extra[key] = ast.literal_eval(value)
    return parts[0], float(parts[1]), extra


class _LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def run(spec: str, steps: int, warmup: int, data: pl.LightningDataModule) -> dict[str, Any]:
    """Train one spec; return its final loss and CPU seconds per step."""
    name, lr, extra = parse_spec(spec)
    pl.seed_everything(0, verbose=False)
    model = quickstart_model(
        name, lr=lr, optimizer_kwargs=extra or None, lr_schedule="cosine", warmup_steps=warmup
    )
    recorder = _LossRecorder()
    start = time.process_time()
    quiet_trainer(steps, [recorder]).fit(model, data)
    seconds = (time.process_time() - start) / steps
    last = recorder.losses[-10:]
    return {"spec": spec, "loss": sum(last) / len(last), "cpu_s_per_step": seconds}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="+", help="NAME:LR[:KEY=VALUE,...]")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = quickstart_data()
    print(f"{'spec':<40} {'loss (last 10)':>14} {'CPU s/step':>10}")
    for spec in args.specs:
        result = run(spec, args.steps, args.warmup, data)
        print(f"{result['spec']:<40} {result['loss']:>14.4f} {result['cpu_s_per_step']:>10.3f}")


if __name__ == "__main__":
    main()
