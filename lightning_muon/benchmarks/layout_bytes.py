"""Collectives and bytes of one optimizer step by layout, against the owner-computes minimum.

Run ``python -m lightning_muon.benchmarks.layout_bytes`` (4 gloo CPU processes, about a minute).
A litgpt GPT (grouped-query attention) is laid out five ways on 4 ranks: DDP replicas, FSDP2
(4×1), tensor parallelism (1×4, litgpt's TP plan of
:mod:`lightning_muon.litgpt.tensor_parallel`), FSDP2 × TP (2×2) and HSDP (2 replicas × 2
shards), plus DDP, TP and FSDP2 × TP with per-head blocks (``structure``: each head of the fused
``attn.qkv`` weights is a matrix of its own, here and in the minimum). One NorMuon step (fp32 Newton–Schulz, so
inputs and results travel in fp32) is counted by the optimizer's own ``CommStats``, summed over
the ranks, after a first step that plans.

**The minimum.** Owner-computes moves each hidden matrix to one rank and its result back. For a
matrix of ``M`` elements of which rank ``r`` holds ``h_r`` (replicas counted on every rank holding
them), the cheapest owner is the rank holding most; it must receive the ``M − max h`` elements it
lacks and send every other rank what it holds: ``(M − max h) + (Σ h_r − max h)`` elements, times
4 bytes. The page reports the measured bytes of the matrix transfers (gathers, scatters and
shared results) against that sum; all-reduces (matrix sums, gradient flags) are listed apart.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import torch
import torch.distributed as dist

from .report import write_outputs
from .spawn import spawn_ranks

CONFIG = dict(
    name="bytes-gqa", block_size=16, vocab_size=64, padded_vocab_size=64, n_layer=2, n_head=8,
    n_query_groups=4, n_embd=64, rotary_percentage=1.0, parallel_residual=False, bias=False,
    norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=192,
)  # fmt: skip
#: label → (data-parallel size, tensor-parallel size, how the data dimension shards)
LAYOUTS: dict[str, tuple[int, int, str]] = {
    "DDP (replicas)": (4, 1, "ddp"),
    "DDP, per-head blocks": (4, 1, "ddp-heads"),
    "FSDP2 (4×1)": (4, 1, "fsdp"),
    "TP (1×4)": (1, 4, "fsdp"),
    "FSDP2 × TP (2×2)": (2, 2, "fsdp"),
    "TP (1×4), per-head blocks": (1, 4, "fsdp-heads"),
    "FSDP2 × TP (2×2), per-head blocks": (2, 2, "fsdp-heads"),
    "HSDP (2 replicas × 2 shards)": (4, 1, "hsdp"),
}
MATRIX_KINDS = ("gather", "scatter", "share")


def _model(layout: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    from litgpt import GPT, Config
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from ..litgpt.structure import attention_structure
    from ..litgpt.tensor_parallel import group_qkv, parallelize

    torch.manual_seed(0)
    model, extra = GPT(Config(**CONFIG)), {}
    dp, tp, kind = LAYOUTS[layout]
    if kind.startswith("ddp"):
        group_qkv(model)
        if kind == "ddp-heads":
            extra["structure"] = attention_structure(model, split="heads")
    elif kind == "hsdp":
        mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
        group_qkv(model)
        for block in model.transformer.h:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    else:
        names = ("data_parallel", "tensor_parallel")
        parallelize(model, init_device_mesh("cpu", (dp, tp), mesh_dim_names=names))
        if kind == "fsdp-heads":
            extra["structure"] = attention_structure(model, split="heads")
    return model, extra


def _held(opt: Any) -> tuple[list[int], list[int]]:
    """``(elements this rank holds, elements)`` of every matrix the optimizer orthogonalizes: each
    block of a structured weight counts as a matrix of its own."""
    from ..distributed.block_layout import block_layout_of
    from ..distributed.block_pieces import block_pieces
    from ..optim.structure import group_blockings

    held, sizes = [], []
    for group in opt.param_groups:
        if group["branch"] != "muon":
            continue
        blockings = group_blockings(group)
        for p in group["params"]:
            local = p.to_local() if hasattr(p, "to_local") else p
            blocking = blockings.get(p)
            if blocking is None:
                held.append(local.numel())
                sizes.append(p.numel())
                continue
            local_rows = blocking.rows
            columns = blocking.columns
            if hasattr(p, "to_local"):
                local_blocking, _ = block_pieces(block_layout_of("", p), blocking)
                local_rows, columns = local_blocking.rows, local_blocking.columns
            held += [rows * columns for rows in local_rows]
            sizes += [rows * blocking.columns for rows in blocking.rows]
    return held, sizes


def measure_layout(layout: str) -> dict[str, Any]:
    """One counted NorMuon step of ``layout`` (called on every rank); sums over the ranks."""
    from .. import NorMuon
    from ..distributed import engine_of

    model, extra = _model(layout)
    opt = NorMuon(model, lr=0.01, ns_dtype="float32", **extra)
    g = torch.Generator().manual_seed(1)
    batch = torch.randint(0, CONFIG["vocab_size"], (2, CONFIG["block_size"] + 1), generator=g)
    for counted in (False, True):
        engine = engine_of(opt)
        if counted and engine is not None:
            engine.stats.reset()
        opt.zero_grad(set_to_none=True)
        logits = model(batch[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).backward()
        opt.step()
    engine = engine_of(opt)
    calls = dict(engine.stats.calls) if engine else {}
    sent = dict(engine.stats.bytes) if engine else {}
    held_list, size_list = _held(opt)
    held = torch.tensor(held_list, dtype=torch.float64)
    per_rank = [torch.zeros_like(held) for _ in range(dist.get_world_size())]
    dist.all_gather(per_rank, held)
    table = torch.stack(per_rank)  # (world, matrices)
    sizes = torch.tensor(size_list, dtype=torch.float64)
    most = table.max(dim=0).values
    minimum = float(((sizes - most) + (table.sum(dim=0) - most)).sum() * 4)
    totals = torch.tensor(
        [sum(sent.get(k, 0) for k in MATRIX_KINDS), sent.get("all_reduce", 0),
         sum(calls.get(k, 0) for k in MATRIX_KINDS), calls.get("all_reduce", 0)],
        dtype=torch.float64,
    )  # fmt: skip
    dist.all_reduce(totals)
    return {
        "matrix_bytes": float(totals[0]),
        "all_reduce_bytes": float(totals[1]),
        "matrix_collectives_per_rank": float(totals[2]) / dist.get_world_size(),
        "all_reduces_per_rank": float(totals[3]) / dist.get_world_size(),
        "minimum_bytes": minimum,
        "matrix_elements": int(sizes.sum()),
    }


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    results = {layout: measure_layout(layout) for layout in LAYOUTS}
    if rank == 0:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


def run(world: int = 4) -> dict[str, Any]:
    """Every layout on ``world`` spawned gloo processes; the rank-summed counts per layout."""
    return spawn_ranks(_worker, world)


def markdown(results: dict[str, Any], command: str) -> str:
    """The page ``docs/benchmarks/layout-bytes.md`` for ``results`` of :func:`run`."""
    first = next(iter(results.values()))
    lines = [
        "# Bytes per step by layout",
        "",
        f"Measured by `{command}`: one NorMuon step of a litgpt GPT ({CONFIG['n_layer']} layers × "
        f"{CONFIG['n_embd']}, {CONFIG['n_head']} heads in {CONFIG['n_query_groups']} query groups; "
        f"{first['matrix_elements']:,} hidden-matrix elements) on 4 ranks, fp32 transfers, bytes "
        "summed over the ranks.",
        "",
        "| layout | matrix bytes | minimum | ratio | matrix collectives per rank | all-reduces per rank (bytes) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for layout, r in results.items():
        ratio = r["matrix_bytes"] / r["minimum_bytes"] if r["minimum_bytes"] else float("nan")
        lines.append(
            f"| {layout} | {r['matrix_bytes']:,.0f} | {r['minimum_bytes']:,.0f} | "
            f"{'–' if r['minimum_bytes'] == 0 else f'{ratio:.2f}×'} | "
            f"{r['matrix_collectives_per_rank']:g} | {r['all_reduces_per_rank']:g} "
            f"({r['all_reduce_bytes']:,.0f}) |"
        )
    lines += [
        "",
        "The minimum is owner-computes' (module docstring of "
        "`lightning_muon.benchmarks.layout_bytes`): every element the owner lacks reaches it once "
        "and every rank gets back what it holds. Above it: tensor-parallel column blocks receive "
        "whole rows back (exact row statistics, at most `T`× a block's bytes). DDP replicas "
        "send each owner's results to every other rank once, without padding. With per-head "
        "blocks every "
        "head is a matrix of its own: under DDP every replica updates its blocked weights itself "
        "(no transfer, repeated compute), and under TP and FSDP2 × TP each head lies whole on the "
        "rank holding it and is updated there, so the fused QKV weights move no bytes at all.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line: measure every layout, write ``--json`` and ``--markdown`` (else print)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)
    command = (
        "python -m lightning_muon.benchmarks.layout_bytes"
        + (f" --json {args.json}" if args.json else "")
        + (f" --markdown {args.markdown}" if args.markdown else "")
    )
    results = run()
    write_outputs(results, markdown(results, command), args.json, args.markdown)


if __name__ == "__main__":
    main()
