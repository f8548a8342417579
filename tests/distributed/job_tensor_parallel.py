"""litgpt's GPT under the tensor-parallel plan on 4 gloo processes; run by ``test_tensor_parallel.py``.

Usage: ``python job_tensor_parallel.py OUT`` on 4 ranks. Each rank writes ``OUT/rank{r}.json``
(nothing is asserted here):

* forward and backward on the 2×2, 1×4 and 4×1 meshes (``parallelize``) against the unsharded model:
  the loss of each data-parallel rank's batch, and every parameter's full gradient (data-parallel
  ranks train on different batches, so the reference is the mean loss over them);
* a few optimizer steps of every Muon-family optimizer on each mesh against one process fed the
  same gradients (fp32 Newton–Schulz on both sides), parameters and state.
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

from tp_gpt import GQA, MHA, full, full_params, full_states, gpt, lm_loss, max_rel, mesh, tokens  # noqa: E402

import lightning_muon.distributed as lmd  # noqa: E402
from lightning_muon.litgpt.tensor_parallel import group_qkv, parallelize  # noqa: E402
from lightning_muon.optim.registry import OPTIMIZERS  # noqa: E402

MESHES = {"2x2": (2, 2), "1x4": (1, 4), "4x1": (4, 1)}
STEPS = 3


def forward_backward(config: dict[str, Any], dp: int, tp: int) -> dict[str, Any]:
    device_mesh = mesh(dp, tp)
    dp_rank = device_mesh["data_parallel"].get_local_rank()
    data = tokens(2 * dp, config).split(2)
    model = parallelize(gpt(config), device_mesh)
    loss = lm_loss(model, data[dp_rank])
    loss.backward()
    plain = gpt(config)  # litgpt's own [q | k | v] order: the function must be the same
    reference = group_qkv(gpt(config))
    ref_losses = [lm_loss(reference, batch) for batch in data]
    torch.stack(ref_losses).mean().backward()
    grads = {n: full(p.grad) for n, p in model.named_parameters()}
    ref_grads = {n: p.grad for n, p in reference.named_parameters()}
    qkv = model.transformer.h[0].attn.qkv.weight
    return {
        "loss_diff": abs(float(loss) - float(ref_losses[dp_rank])),
        "grouped_vs_litgpt_loss_diff": abs(float(lm_loss(plain, data[0])) - float(ref_losses[0])),
        "grad_rel_diff": max_rel(grads, ref_grads),
        "params_equal": max_rel(full_params(model), full_params(reference)) == 0.0,
        "qkv_placements": [str(p) for p in getattr(qkv, "placements", ())],
        "proj_placements": [
            str(p) for p in getattr(model.transformer.h[0].attn.proj.weight, "placements", ())
        ],
    }


def optimizer_steps(cls: type, dp: int, tp: int) -> dict[str, Any]:
    """``STEPS`` steps on the mesh and in one process, in lockstep: the one-process optimizer gets
    the sharded model's full gradients (their round-off is measured by ``forward_backward``), so
    the comparison is the optimizer's alone."""
    device_mesh = mesh(dp, tp)
    dp_rank = device_mesh["data_parallel"].get_local_rank()
    steps = [batch.split(2) for batch in tokens(2 * dp * STEPS, GQA).split(2 * dp)]
    model = parallelize(gpt(GQA), device_mesh)
    opt = cls(model, lr=0.02, ns_dtype="float32")
    reference = group_qkv(gpt(GQA))
    ref_opt = cls(reference, lr=0.02, ns_dtype="float32")
    lmd.configure(ref_opt, mode="local")
    ref_params = dict(reference.named_parameters())
    named = {n.replace("_forward_module.", ""): p for n, p in model.named_parameters()}
    for step in steps:
        opt.zero_grad(set_to_none=True)
        lm_loss(model, step[dp_rank]).backward()
        for n, p in named.items():
            ref_params[n].grad = full(p.grad)
        opt.step()
        ref_opt.step()
    state, ref_state = full_states(opt, named, ref_opt, ref_params)
    engine = lmd.engine_of(opt)
    return {
        "param_rel_diff": max_rel(full_params(model), full_params(reference)),
        "state_rel_diff": max_rel(state, ref_state),
        "block_params": len(engine.blocks.layouts) if engine and engine.blocks else 0,
    }


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = dist.get_rank()
    results: dict[str, Any] = {"rank": rank, "forward_backward": {}, "optimizer": {}}
    for name, (dp, tp) in MESHES.items():
        results["forward_backward"][f"gqa {name}"] = forward_backward(GQA, dp, tp)
    results["forward_backward"]["mha 2x2"] = forward_backward(MHA, 2, 2)
    for cls in OPTIMIZERS.values():
        for name, (dp, tp) in MESHES.items():
            results["optimizer"][f"{cls.__name__} {name}"] = optimizer_steps(cls, dp, tp)
    (out / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
