"""Newton–Schulz coefficient tables by training loss: ``python -m lightning_muon.benchmarks.ns_tables_training``.

Trains the efficiency benchmark's CPU model (:data:`~.efficiency.PRESETS` ``"cpu"``: 4 × 128
byte-level GPT, 512 tokens/step, 400 steps, the standard library's source) once per optimizer and
coefficient table (Jordan, You, Polar Express) with the optimizer's default learning rate and one
seed, and reports the final validation loss next to the table's error against the exact polar factor
(:mod:`.ns_quality`). One process, one thread, runs in sequence.

Example:
    >>> rows = [{"optimizer": "muon", "table": "jordan", "val_losses": [5.5, 1.74], "wall_s": 1.0}]
    >>> "| muon | jordan | 1.7400 |" in markdown({"runs": rows, "command": "x", "seed": 0})
    True
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import lm_training
from .efficiency import PRESETS
from .report import command_line

TABLES = ("jordan", "you", "polar_express")


def run(optimizers: Sequence[str], seed: int = 0, out: Path | None = None) -> dict[str, Any]:
    """Train every ``optimizer`` × table; returns (and writes to ``out`` after each run) the record."""
    torch.set_num_threads(1)
    p = PRESETS["cpu"]
    model = lm_training.ModelSpec(
        n_layer=p["n_layer"], n_embd=p["n_embd"], n_head=p["n_head"], block_size=p["block_size"]
    )
    spec = lm_training.TrainSpec(
        steps=p["steps"], batch_size=p["batch_size"], warmup_steps=p["warmup_steps"],
        eval_every=p["eval_every"], device="cpu",
    )  # fmt: skip
    data = lm_training.BenchData.load(
        max_bytes=p["max_bytes"], block_size=p["block_size"], val_windows=p["val_windows"]
    )
    record: dict[str, Any] = {"preset": "cpu", "seed": seed, "runs": []}
    for name in optimizers:
        base = dict(lm_training.OPTIMIZER_KWARGS.get(name, {}))
        try:
            for table in TABLES:
                lm_training.OPTIMIZER_KWARGS[name] = {**base, "orthogonalizer": table}
                start = time.time()
                result = lm_training.train_run(
                    name, lm_training.default_lr(name), seed, model, spec, data
                ).to_dict()
                result.update(optimizer=name, table=table, wall_s=time.time() - start)
                record["runs"].append(result)
                if out is not None:
                    out.write_text(json.dumps(record, indent=1))
        finally:
            lm_training.OPTIMIZER_KWARGS[name] = base
    return record


def markdown(record: dict[str, Any]) -> str:
    """The final validation loss of every run, by optimizer and table."""
    lines = [
        "## Newton–Schulz tables by training loss",
        "",
        f"- command: `{record['command']}`",
        f"- efficiency benchmark CPU preset, seed {record['seed']}, default learning rates",
        "",
        "| optimizer | table | final val loss | wall (s) |",
        "|---|---|---:|---:|",
    ]
    for r in record["runs"]:
        name = r.get("optimizer", r.get("name"))
        lines.append(f"| {name} | {r['table']} | {r['val_losses'][-1]:.4f} | {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m lightning_muon.benchmarks.ns_tables_training")
    parser.add_argument("--optimizers", nargs="+", default=["muon", "normuon"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", required=True, help="result JSON (written after every run)")
    parser.add_argument("--markdown", default=None, help="markdown report")
    parser.add_argument("--from-json", action="store_true", help="only re-render --json")
    args = parser.parse_args(argv)
    path = Path(args.json)
    if args.from_json:
        record = json.loads(path.read_text())
    else:
        record = run(args.optimizers, args.seed, path)
        record["command"] = command_line("ns_tables_training", argv)
        path.write_text(json.dumps(record, indent=1))
    text = markdown(record)
    if args.markdown:
        Path(args.markdown).write_text(text)
    else:
        print(text)
    return record


if __name__ == "__main__":
    main()
