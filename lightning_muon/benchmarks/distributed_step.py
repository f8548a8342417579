"""Owner-computes orthogonalization on 2 CPU ranks for GPT-2-small-shaped matrices.

Run ``python -m lightning_muon.benchmarks.distributed_step`` (``--layers 2`` for a quick run). Two
gloo processes shard the 48 hidden matrices of GPT-2 small (12 blocks of ``(2304, 768)``,
``(768, 768)``, ``(3072, 768)``, ``(768, 3072)``; 85M parameters) with ``fully_shard`` and report:

* **Newton–Schulz FLOPs per rank** as a fraction of the total, counted from the matrices each
  rank actually orthogonalized (``T·(4a²b + 2a³)`` each; target ≤ 0.55, ideal ``1/W``);
* **optimizer bytes per parameter and step**, summed over the ranks, by kind, with fp32 and with
  bf16 transfers. Each element crosses the network once to its owner and once back, so the
  expectation is ``(W−1)/W`` elements each way: 1 B + 1 B with bf16 at ``W = 2``, tending to the
  NorMuon paper's 2 B gather + 2 B scatter (§3.3) as ``W`` grows;
* **step time**, sharded (2 ranks, 1 thread each) against one process holding the whole model
  (2 threads, the same cores), in interleaved rounds; medians and the per-round ratio.

The process group is gloo on the CPU: the numbers say how work and bytes are divided, not how fast
a GPU cluster runs. Other processes on the machine disturb the times (the rounds are interleaved
and medians reported for that reason); FLOP shares and bytes do not depend on the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .report import write_outputs
from .spawn import spawn_ranks

#: The hidden matrices of one GPT-2-small block in ``nn.Linear`` layout ``(out, in)``.
GPT2_BLOCK = {
    "attn.c_attn": (2304, 768),
    "attn.c_proj": (768, 768),
    "mlp.c_fc": (3072, 768),
    "mlp.c_proj": (768, 3072),
}


def gpt2_matrices(layers: int) -> nn.Module:
    """``layers`` GPT-2-small blocks of bias-free ``nn.Linear`` layers (only the hidden matrices)."""
    blocks = nn.ModuleList()
    for _ in range(layers):
        block = nn.Module()
        for name, (out, inp) in GPT2_BLOCK.items():
            parent, attr = name.split(".")
            if not hasattr(block, parent):
                block.add_module(parent, nn.Module())
            getattr(block, parent).add_module(attr, nn.Linear(inp, out, bias=False))
        blocks.append(block)
    return nn.Sequential(blocks)


def _full_grads(model: nn.Module, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g) * 1e-3 for p in model.parameters()]


def _owned_flops(opt: Any) -> int:
    """Newton–Schulz FLOPs of the matrices this rank owns in one step (from the executor's plan)."""
    from ..distributed import engine_of, ns_flops

    engine = engine_of(opt)
    return sum(
        len(bucket.owned(bucket.layout.rank)) * ns_flops(*bucket.shape, group["ns_steps"])
        for group in opt.param_groups
        for bucket in engine.planned(group)
    )


def _step_bytes(
    args: argparse.Namespace, transfer: str, grads: list[torch.Tensor], mesh: Any
) -> dict[str, float]:
    """Bytes one sharded step sends, summed over ranks, per kind (1 Newton–Schulz step: bytes do not depend on it)."""
    from ..distributed import configure, engine_of

    _, opt = _sharded(args, grads, mesh, ns_steps=1)
    configure(opt, transfer_dtype=transfer)
    opt.step()
    stats = engine_of(opt).stats
    kinds = sorted(stats.bytes)
    totals = torch.tensor([float(stats.bytes[k]) for k in kinds], dtype=torch.float64)
    dist.all_reduce(totals)
    return dict(zip(kinds, totals.tolist(), strict=True))


def _sharded(
    args: argparse.Namespace, grads: list[torch.Tensor], mesh: Any, **kwargs: Any
) -> tuple[nn.Module, Any]:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from ..distributed import chunk_rows

    torch.manual_seed(0)
    model = gpt2_matrices(args.layers)
    for block in model[0]:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for p, g in zip(model.parameters(), grads, strict=True):
        rows = p.to_local().shape[0]
        start = sum(chunk_rows(p.shape[0], mesh.size())[: mesh.get_local_rank()])
        p.grad = DTensor.from_local(
            g[start : start + rows].clone(), mesh, p.placements, shape=p.shape, stride=p.stride()
        )
    return model, _optimizer(args, model, **kwargs)


def _optimizer(args: argparse.Namespace, model: nn.Module, **kwargs: Any) -> Any:
    """Every matrix on the orthogonal branch (by-module routing would send the last one to AdamW)."""
    from ..optim.registry import get_optimizer_class

    names, params = zip(*model.named_parameters(), strict=True)
    group = {"params": list(params), "param_names": list(names), "branch": "muon"}
    return get_optimizer_class(args.optimizer)([group], **kwargs)


def _worker(rank: int, world: int, args: argparse.Namespace, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh

    from ..distributed import configure

    mesh = init_device_mesh("cpu", (world,))
    grads = _full_grads(gpt2_matrices(args.layers), seed=1)
    numel = sum(g.numel() for g in grads)
    result: dict[str, Any] = {
        "world": world,
        "layers": args.layers,
        "matrices": len(grads),
        "parameters": numel,
    }
    result["load_average_before"] = os.getloadavg()[0]  # other processes share the machine

    # bytes per parameter and step, fp32 and bf16 transfers
    result["bytes_per_parameter"] = {
        t: {k: v / numel for k, v in _step_bytes(args, t, grads, mesh).items()}
        for t in ("float32", "bfloat16")
    }

    # Newton–Schulz FLOPs and step times, interleaved rounds
    torch.set_num_threads(1)
    _, sharded_opt = _sharded(args, grads, mesh)
    single = None
    if rank == 0:
        torch.manual_seed(0)
        model = gpt2_matrices(args.layers)
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g
        single = _optimizer(args, model)
        configure(single, mode="local")
    del grads
    times: dict[str, list[float]] = {"sharded": [], "single": []}
    for r in range(args.rounds + 1):  # round 0 is a warm-up (state creation)
        order = ("single", "sharded") if r % 2 else ("sharded", "single")
        for kind in order:
            dist.barrier()
            if kind == "single":
                if rank == 0:
                    torch.set_num_threads(world)
                    start = time.perf_counter()
                    single.step()
                    elapsed = time.perf_counter() - start
                    torch.set_num_threads(1)
                else:
                    elapsed = 0.0
            else:
                start = time.perf_counter()
                sharded_opt.step()
                elapsed = time.perf_counter() - start
            slowest = torch.tensor([elapsed])
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            if r:
                times[kind].append(float(slowest))
    per_rank = torch.zeros(world, dtype=torch.float64)
    per_rank[rank] = _owned_flops(sharded_opt)
    dist.all_reduce(per_rank)
    total = float(per_rank.sum())
    result["ns_flops_per_step"] = total
    result["ns_flop_share"] = [float(x) / total for x in per_rank]
    result["load_average_after"] = os.getloadavg()[0]
    result["step_seconds"] = {k: statistics.median(v) for k, v in times.items()}
    result["step_seconds_rounds"] = times
    ratios = [a / b for a, b in zip(times["sharded"], times["single"], strict=True)]
    result["sharded_over_single"] = {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
    }
    if rank == 0:
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
    dist.destroy_process_group()


def report(result: dict[str, Any]) -> str:
    """A markdown summary of one run."""
    w = result["world"]
    lines = [
        f"GPT-2-small hidden matrices: {result['layers']} blocks, {result['matrices']} matrices, "
        f"{result['parameters'] / 1e6:.1f}M parameters, {w} gloo ranks",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| Newton–Schulz GFLOP per step (all ranks) | {result['ns_flops_per_step'] / 1e9:.1f} |",
        f"| NS FLOP share per rank | {', '.join(f'{s:.3f}' for s in result['ns_flop_share'])} (target ≤ 0.55) |",
    ]
    expected = (w - 1) / w
    for transfer, kinds in result["bytes_per_parameter"].items():
        size = 2 if transfer == "bfloat16" else 4
        detail = ", ".join(f"{k} {v:.3f}" for k, v in kinds.items())
        lines.append(
            f"| bytes/parameter/step, {transfer} transfers | {sum(kinds.values()):.3f} ({detail}); "
            f"expected {expected * size:.2f} + {expected * size:.2f}; paper (W→∞, bf16) 2 + 2 |"
        )
    t = result["step_seconds"]
    ratio = result["sharded_over_single"]
    lines += [
        f"| step time, sharded ({w} ranks × 1 thread), median | {t['sharded']:.2f} s |",
        f"| step time, one process ({w} threads), median | {t['single']:.2f} s |",
        f"| sharded / one process, per round | median {ratio['median']:.2f} (range {ratio['min']:.2f}–{ratio['max']:.2f}) |",
        f"| load average (1 min) before / after | {result['load_average_before']:.1f} / {result['load_average_after']:.1f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse arguments, run 2 ranks, print the report; returns the measurements."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--layers", type=int, default=12, help="GPT-2-small blocks (12 = the whole model)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed interleaved rounds (after one warm-up)"
    )
    parser.add_argument("--optimizer", default="normuon", help="optimizer name from the registry")
    parser.add_argument("--world", type=int, default=2, help="gloo processes")
    parser.add_argument("--json", default=None, help="also write the measurements to this file")
    args = parser.parse_args(argv)
    if args.layers < 1 or args.rounds < 1 or args.world < 2:
        parser.error(
            f"need --layers >= 1, --rounds >= 1 and --world >= 2, got {args.layers}, {args.rounds}, {args.world}"
        )
    result = spawn_ranks(_worker, args.world, (args,))
    result["command"] = "python -m lightning_muon.benchmarks.distributed_step " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k != "json" and v is not None
    )
    write_outputs(result, report(result), args.json)
    return result


if __name__ == "__main__":
    main()
