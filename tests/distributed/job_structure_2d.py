"""Structured matrices on 2-D meshes of 4 gloo processes; run by ``test_structure_2d.py``.

Usage: ``python job_structure_2d.py OUT`` on 4 ranks. Each rank writes ``OUT/rank{r}.json``
(nothing is asserted here), for every Muon-family optimizer, a few steps against one process fed
the same gradients (fp32 Newton–Schulz on both sides), with the structure on and off:

* **per head**: litgpt's GPT under the tensor-parallel plan (``parallelize``) on the 2×2 mesh
  (``qkv`` rows split by TP, then strided over the data-parallel ranks) and the 1×4 mesh, with
  ``attention_structure(model)``: whole heads lie on each rank on both meshes, so they are
  updated where they are; and, on 2×2, ``qkv`` cut into blocks of 20 and 44 rows, which
  straddle the shards and are gathered;
* **per expert**: an expert stack ``(E, m, n)`` on a 2×2 ``(data_parallel, expert_parallel)``
  mesh, experts split over the expert-parallel dimension and, over the data-parallel one, their
  rows (``Shard(1)``: experts gathered), replicas (``Replicate``: updated by every holder) or
  the experts again (``Shard(0)`` twice: one whole expert per rank).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.tensor import Replicate, Shard, distribute_tensor  # noqa: E402
from tp_gpt import GQA, full, full_params, full_states, gpt, lm_loss, max_rel, mesh, tokens  # noqa: E402

import lightning_muon.distributed as lmd  # noqa: E402
from lightning_muon.litgpt import attention_structure  # noqa: E402
from lightning_muon.litgpt.tensor_parallel import group_qkv, parallelize  # noqa: E402
from lightning_muon.optim.registry import OPTIMIZERS  # noqa: E402

STEPS = 3
EXPERT_LAYOUTS = {
    "rows over dp": (Shard(1), Shard(0)),
    "replicas over dp": (Replicate(), Shard(0)),
    "experts over dp": (Shard(0), Shard(0)),
}


def _report(
    opt: Any, params: dict, ref_opt: Any, ref_params: dict, initial: dict
) -> dict[str, Any]:
    """Differences to one process (parameters, state), how far the weights moved, and which
    matrices were gathered to owners (the others were updated where they are)."""
    state, ref_state = full_states(opt, params, ref_opt, ref_params)
    engine = lmd.engine_of(opt)
    return {
        "param_rel_diff": max_rel({n: full(p) for n, p in params.items()}, ref_params),
        "state_rel_diff": max_rel(state, ref_state),
        "moved": max_rel({n: full(p) for n, p in params.items()}, initial),
        "gathered": sorted(engine.owners()) if engine is not None else [],
        "orthogonalized": engine.stats.orthogonalized if engine is not None else 0,
    }


def per_head(cls: type, dp: int, tp: int, structured: str) -> dict[str, Any]:
    device_mesh = mesh(dp, tp)
    dp_rank = device_mesh["data_parallel"].get_local_rank()
    steps = [batch.split(2) for batch in tokens(2 * dp * STEPS, GQA).split(2 * dp)]
    model = parallelize(gpt(GQA), device_mesh)
    reference = group_qkv(gpt(GQA))
    structure = {
        "heads": attention_structure(reference),
        "rows": {"*attn.qkv.weight": {"split": "rows", "sizes": [20, 44]}},
        "off": "flatten",
    }[structured]
    opt = cls(model, lr=0.02, ns_dtype="float32", structure=structure)
    ref_opt = cls(reference, lr=0.02, ns_dtype="float32", structure=structure)
    lmd.configure(ref_opt, mode="local")
    ref_params = dict(reference.named_parameters())
    named = {n.replace("_forward_module.", ""): p for n, p in model.named_parameters()}
    initial = full_params(model)
    for step in steps:
        opt.zero_grad(set_to_none=True)
        lm_loss(model, step[dp_rank]).backward()
        for n, p in named.items():
            ref_params[n].grad = full(p.grad)
        opt.step()
        ref_opt.step()
    report = _report(opt, named, ref_opt, ref_params, initial)
    report["gathered"] = [n for n in report["gathered"] if "attn.qkv" in n]
    return report


def per_expert(cls: type, layout: str, structured: bool) -> dict[str, Any]:
    device_mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "ep"))
    g = torch.Generator().manual_seed(7)
    start = torch.randn(4, 6, 10, generator=g)
    experts = torch.nn.Parameter(distribute_tensor(start, device_mesh, EXPERT_LAYOUTS[layout]))
    reference = torch.nn.Parameter(start.clone())
    structure = "experts" if structured else "flatten"
    settings = {"lr": 0.02, "ns_dtype": "float32", "structure": structure}
    opt = cls([{"params": [experts], "param_names": ["moe.experts"]}], **settings)
    ref_opt = cls([{"params": [reference], "param_names": ["moe.experts"]}], **settings)
    lmd.configure(ref_opt, mode="local")
    for _ in range(STEPS):
        grad = torch.randn(4, 6, 10, generator=g)
        experts.grad = distribute_tensor(grad, device_mesh, EXPERT_LAYOUTS[layout])
        reference.grad = grad.clone()
        opt.step()
        ref_opt.step()
    report = _report(
        opt, {"moe.experts": experts}, ref_opt, {"moe.experts": reference}, {"moe.experts": start}
    )
    report["state_shapes"] = {k: list(v.shape) for k, v in opt.state[experts].items()}
    return report


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = dist.get_rank()
    results: dict[str, Any] = {"rank": rank, "per_head": {}, "per_expert": {}}
    for cls in OPTIMIZERS.values():
        for structured in (True, False):
            tag = "on" if structured else "off"
            for name, (dp, tp) in {"2x2": (2, 2), "1x4": (1, 4)}.items():
                key = f"{cls.__name__} {name} {tag}"
                results["per_head"][key] = per_head(cls, dp, tp, "heads" if structured else "off")
            for layout in EXPERT_LAYOUTS:
                key = f"{cls.__name__} {layout} {tag}"
                results["per_expert"][key] = per_expert(cls, layout, structured)
        results["per_head"][f"{cls.__name__} 2x2 rows"] = per_head(cls, 2, 2, "rows")
    (out / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
