"""The main job's loss table: run the quick-start recipe as a user would and write down its losses.

Runs ``lightning-muon fit --config recipes/quickstart.yaml`` in a child process (into a temporary
``--trainer.default_root_dir``), reads the run's ``metrics.csv`` and reports ``val_loss`` after
each validation, the final loss in bits per byte (``val_loss / ln 2``), and the wall and CPU time
of the whole command. With ``--page`` it rewrites the block between ``<!-- main-job:start -->``
and ``<!-- main-job:end -->`` of that page; ``--out`` keeps every number as JSON. The JSON also
holds the losses of a small run of the same recipe (:data:`SMALL` appended), which the test suite
repeats to notice when the code no longer gives the page's numbers.

Run::

    python -m lightning_muon.benchmarks.main_job --page docs/how-to/main-job.md \\
        --out docs/img/main-job.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_muon.benchmarks.pages import replace_block
from lightning_muon.core.ns_dtype import ENV_VAR as NS_DTYPE_VAR

PAGE_BLOCK = "main-job"
RECIPE = "recipes/quickstart.yaml"
#: Overrides of the small check run: 4 steps, validation after 2 and 4, a small corpus.
SMALL = [
    "--trainer.max_steps=4",
    "--trainer.val_check_interval=2",
    "--trainer.limit_val_batches=2",
    "--model.warmup_steps=1",
    "--data.max_bytes=200000",
]


def run_recipe(recipe: str, extra: Sequence[str] = (), cwd: str | None = None) -> dict[str, Any]:
    """Run the recipe with ``lightning-muon fit`` in a child process; its losses and times.

    Returns:
        ``{"val_loss": {steps_done: loss}, "train_loss": {...}, "wall_s", "cpu_s"}``; steps are
        optimizer steps completed (the ``step`` column of ``metrics.csv`` plus one).
    """
    with tempfile.TemporaryDirectory(prefix="main-job-") as root:
        cmd = [
            sys.executable,
            "-m",
            "lightning_muon.cli",
            "fit",
            "--config",
            recipe,
            f"--trainer.default_root_dir={root}",
            "--trainer.enable_progress_bar=false",
            *extra,
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        # Newton–Schulz in fp32, as the page says and the test suite pins it (not the hardware's default)
        env = {**os.environ, NS_DTYPE_VAR: "float32"}
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        (metrics,) = Path(root).rglob("metrics.csv")
        with open(metrics, newline="") as f:
            rows = list(csv.DictReader(f))
    losses: dict[str, dict[int, float]] = {"val_loss": {}, "train_loss": {}}
    for row in rows:
        for key, series in losses.items():
            if row.get(key):
                series[int(row["step"]) + 1] = float(row[key])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**losses, "wall_s": wall, "cpu_s": cpu}


def page_block(result: dict[str, Any]) -> str:
    """The generated part of ``docs/how-to/main-job.md``: the loss table and the run's cost."""
    val = {int(k): v for k, v in result["full"]["val_loss"].items()}
    steps = sorted(val)
    last = steps[-1]
    cells = [f"{val[s]:.3f}" for s in steps]
    cells[-1] += f" ({val[last] / math.log(2):.2f} bits per byte)"
    load = result["load_average"]
    return "\n".join(
        [
            "| optimizer steps | " + " | ".join(str(s) for s in steps) + " |",
            "|---|" + "---|" * len(steps),
            "| `val_loss` | " + " | ".join(cells) + " |",
            "",
            f"(`metrics.csv` writes these at `step` {', '.join(str(s - 1) for s in steps)}: "
            "Lightning's loggers count steps from 0.) The whole command took "
            f"{result['full']['wall_s']:.0f} s of wall time ({result['full']['cpu_s']:.0f} s of "
            f"CPU time), startup included, on Python {result['python']} and torch "
            f"{result['torch']}, {os.cpu_count()} cores at load average {load:.1f}. "
            f"Regenerate with `{result['command']}`.",
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default=RECIPE)
    p.add_argument("--page", type=Path, default=None, help="page whose generated block to rewrite")
    p.add_argument("--out", type=Path, default=None, help="JSON with every number")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = parse_args(argv)
    import torch

    load = os.getloadavg()[0]
    result = {
        "recipe": args.recipe,
        "command": " ".join(["python -m lightning_muon.benchmarks.main_job", *argv]),
        "python": platform.python_version(),
        "torch": torch.__version__.split("+")[0],
        "load_average": load,
        "full": run_recipe(args.recipe),
        "small": {"overrides": SMALL, **run_recipe(args.recipe, SMALL)},
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    if args.page is not None:
        replace_block(args.page, PAGE_BLOCK, page_block(result))
    print(page_block(result))
    return result


if __name__ == "__main__":
    main()
