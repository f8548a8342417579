"""The GPU path in one command: ``python -m lightning_muon.benchmarks.gpu_check --out DIR``.

Runs, on the first CUDA device, within about 10 minutes, and writes ``gpu_check.json`` and
``gpu_check.md`` into ``DIR``:

1. ``tests/gpu`` (pytest, in a subprocess; skipped when the test folder is not next to the package);
2. the step benchmark (:mod:`.step_speed`) of ``muon``, ``normuon``, ``torch_muon`` and our bare
   Newton–Schulz (``ns``) on GPT-2-small's 48 hidden matrices and on a ~1B-parameter matrix set
   (24 blocks of width 2048, MLP 8192: 1.2 B hidden parameters), with peak temporary memory;
3. Newton–Schulz throughput as a fraction of the device's bf16 matmul rate measured in the same
   rounds (target ≥ 0.5);
4. CUDA-graph capture of a whole ``Muon`` step (``nonfinite="skip"``: no host read), replayed and
   compared with eager steps on a copy;
5. a short bf16-mixed Lightning training run of a small byte-level transformer on this package's
   own source files, with ``Muon`` (the loss must fall).

Each part records its own error instead of stopping the others. Without a CUDA device the
command prints ``no CUDA device`` and exits with status 2, writing nothing.

Example:
    >>> import torch
    >>> torch.cuda.is_available() or main(["--out", "unused"]) is None  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .shapes import SHAPE_SETS, ShapeSet, _transformer

NAMES = ["muon", "normuon", "torch_muon", "ns"]
NS_GPU_TARGET = 0.5
ROOT = Path(__file__).resolve().parents[2]


def billion_set() -> ShapeSet:
    """Hidden matrices of a ~1B-parameter GPT (24 × 2048, MLP 8192), no auxiliary tensors."""
    hidden, _ = _transformer("h", 24, 2048, 8192)
    return ShapeSet(
        "billion", "24 blocks of width 2048, MLP 8192 (1.2 B hidden parameters)", hidden, ()
    )


def run_tests(timeout: int = 240) -> dict[str, Any]:
    """``pytest tests/gpu`` in a subprocess."""
    folder = ROOT / "tests" / "gpu"
    if not folder.is_dir():
        return {"skipped": f"{folder} not found (installed package without its tests)"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return {"returncode": proc.returncode, "tail": (proc.stdout + proc.stderr)[-3000:]}


def run_step_benchmark(rounds: int = 5) -> dict[str, Any]:
    """Step speed of :data:`NAMES` on the GPT-2-small and ~1B sets, wall clock, synchronised."""
    from .step_speed import run_set

    device = torch.device("cuda")
    out = {}
    for shape_set in (SHAPE_SETS["large"], billion_set()):
        record = run_set(shape_set, NAMES, device, rounds, warmup=2, memory=True, clock="wall")
        out[shape_set.name] = {
            "median_ms": {n: c["median_s"] * 1e3 for n, c in record["candidates"].items()},
            "peak_temp_mib": {
                n: c.get("peak_temp_bytes", 0) / 2**20 for n, c in record["candidates"].items()
            },
            "ratios": {r["pair"]: r["median"] for r in record["ratios"]},
            "ns_fraction_of_bf16_matmul": record["candidates"]["ns"].get("fraction"),
            "probes": {k: v["median_rate"] for k, v in record["probes"].items()},
        }
        torch.cuda.empty_cache()
    return out


def run_graph_capture() -> dict[str, Any]:
    """Capture one ``Muon`` step in a CUDA graph, replay it, compare with eager steps."""
    from ..optim.muon import Muon

    gen = torch.Generator().manual_seed(0)
    shapes = [(768, 768), (3072, 768), (768, 3072)] * 2
    init = [torch.randn(s, generator=gen).cuda() * 0.02 for s in shapes]
    grads = [torch.randn(s, generator=gen).cuda() for s in shapes]

    def build() -> tuple[list[torch.nn.Parameter], Muon]:
        ps = [torch.nn.Parameter(v.clone()) for v in init]
        for p, g in zip(ps, grads, strict=True):
            p.grad = g.clone()
        return ps, Muon([{"params": ps, "branch": "muon"}], nonfinite="skip")

    graphed, opt = build()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up: state, workspaces, kernels
            opt.step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    eager, ref = build()
    for _ in range(3 + 1 + 3):  # warm-up, the captured step (also run once), replays
        ref.step()
    gap = max(float((a - b).abs().max()) for a, b in zip(graphed, eager, strict=True))
    return {"captured": True, "max_abs_difference_vs_eager": gap, "ok": gap < 1e-5}


def run_training(steps: int = 60) -> dict[str, Any]:
    """A bf16-mixed Lightning run of a small byte-level transformer on this package's sources."""
    import lightning.pytorch as pl

    from ..optim.muon import Muon

    text = b"".join(p.read_bytes() for p in sorted((ROOT / "lightning_muon").rglob("*.py")))
    data = torch.tensor(list(text), dtype=torch.long)
    context = 128

    class ByteLM(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(256, 256)
            layer = torch.nn.TransformerEncoderLayer(
                256, 4, 1024, batch_first=True, norm_first=True
            )
            self.blocks = torch.nn.TransformerEncoder(layer, 4)
            self.head = torch.nn.Linear(256, 256)
            self.losses: list[float] = []

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            starts = torch.randint(0, len(data) - context - 1, (32,))
            x = torch.stack([data[s : s + context] for s in starts]).to(self.device)
            y = torch.stack([data[s + 1 : s + context + 1] for s in starts]).to(self.device)
            mask = torch.nn.Transformer.generate_square_subsequent_mask(context, device=self.device)
            logits = self.head(self.blocks(self.embed(x), mask=mask, is_causal=True))
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            self.losses.append(float(loss))
            return loss

        def configure_optimizers(self) -> Muon:
            return Muon(self, lr=0.02, adamw_lr_ratio=0.1)

    torch.manual_seed(0)
    model = ByteLM()
    loader = torch.utils.data.DataLoader(range(steps), batch_size=1)
    trainer = pl.Trainer(
        accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=steps,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, loader)
    first, last = sum(model.losses[:5]) / 5, sum(model.losses[-5:]) / 5
    return {"steps": steps, "loss_first5": first, "loss_last5": last, "ok": last < first}


def _part(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    start = time.time()
    try:
        out = fn()
    except Exception as err:  # noqa: BLE001 - each part reports its own failure
        out = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
    out["wall_s"] = time.time() - start
    return out


def markdown(result: dict[str, Any]) -> str:
    """The report page of a result."""
    lines = ["## GPU check", "", f"- device: {result['device']}", f"- torch {result['torch']}", ""]
    tests = result["tests"]
    lines.append(
        f"- tests/gpu: {tests.get('returncode', tests.get('skipped', tests.get('error')))}"
    )
    for name, s in result["step"].items() if "error" not in result["step"] else ():
        if name == "wall_s":
            continue
        lines += [
            "",
            f"### {name}",
            "",
            "| candidate | median step (ms) | peak temp (MiB) |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| `{c}` | {t:.2f} | {s['peak_temp_mib'][c]:.1f} |" for c, t in s["median_ms"].items()
        ]
        lines += ["", *(f"- {pair}: {value:.3f}" for pair, value in s["ratios"].items())]
        frac = s["ns_fraction_of_bf16_matmul"]
        lines.append(f"- Newton–Schulz / bf16 matmul rate: {frac:.2f} (target ≥ {NS_GPU_TARGET})")
    if "error" in result["step"]:
        lines.append(f"- step benchmark failed: {result['step']['error']}")
    lines += [
        "",
        f"- CUDA graph capture: {json.dumps({k: v for k, v in result['graph'].items() if k != 'traceback'})}",
    ]
    lines.append(
        f"- bf16-mixed training: {json.dumps({k: v for k, v in result['training'].items() if k != 'traceback'})}"
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; exits with status 2 (``no CUDA device``) where there is none."""
    parser = argparse.ArgumentParser(prog="python -m lightning_muon.benchmarks.gpu_check")
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing was run",
            file=sys.stderr,
        )
        raise SystemExit(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    result["tests"] = _part(run_tests)
    result["step"] = _part(lambda: run_step_benchmark(args.rounds))
    result["graph"] = _part(run_graph_capture)
    result["training"] = _part(run_training)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
