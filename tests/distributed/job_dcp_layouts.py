"""DCP checkpoints across layouts: save a litgpt GPT + optimizer on a 2×2 (data × tensor) mesh,
resume on 4×1, 1×4 or one process, and continue as the uninterrupted run does.

``job_dcp_layouts.py OUT save CKPT NAME``: 4 ranks, 2×2 mesh; 3 steps of optimizer ``NAME``
(``normuon-heads``: NorMuon with per-head QKV blocks, whose row statistics and per-block step
counts must reshard too),
``dcp.save`` to ``CKPT/NAME``, 2 more steps; rank 0 writes the final full weights to
``CKPT/NAME.final.pt``. ``job_dcp_layouts.py OUT load CKPT NAME DP TP``: ``DP·TP`` ranks (``1 1``
without a process group): a model with other weights loads ``CKPT/NAME`` and runs the same 2
steps; each rank writes ``OUT/rank{r}.json`` with the largest relative difference from the
uninterrupted weights.

Every layout uses the query-group order of ``attn.qkv`` (``group_qkv``; ``parallelize`` applies it
on every mesh), so the checkpoint's keys and shapes are the same everywhere.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from lightning_muon.litgpt import attention_structure
from lightning_muon.litgpt.tensor_parallel import group_qkv, parallelize
from lightning_muon.optim.registry import OPTIMIZERS
from tests.distributed.tp_gpt import GQA, full_params, gpt, lm_loss, max_rel, mesh, tokens

SAVE_AT, STEPS, BATCH = 3, 5, 4  # 4 sequences per step: split evenly over 1, 2 or 4 data ranks


def build(name: str, dp: int, tp: int, seed: int) -> tuple[torch.nn.Module, Any, int]:
    """The model (grouped QKV, parallelized on a mesh unless one process) and its optimizer."""
    if dp * tp == 1 and not dist.is_initialized():
        model, dp_rank = group_qkv(gpt(GQA, seed)), 0
    else:
        device_mesh = mesh(dp, tp)
        dp_rank = device_mesh["data_parallel"].get_local_rank()
        model = parallelize(gpt(GQA, seed), device_mesh)
    name, _, variant = name.partition("-")  # "normuon-heads": per-head QKV blocks
    structure = attention_structure(model) if variant == "heads" else "flatten"
    opt = OPTIMIZERS[name](model, lr=0.02, ns_dtype="float32", structure=structure)
    return model, opt, dp_rank


def train(
    model: torch.nn.Module, opt: Any, steps: list[torch.Tensor], dp: int, dp_rank: int
) -> None:
    for batch in steps:
        opt.zero_grad(set_to_none=True)
        lm_loss(model, batch.split(BATCH // dp)[dp_rank]).backward()
        opt.step()


def state(model: torch.nn.Module, opt: Any) -> dict[str, Any]:
    return {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}


def main() -> None:
    out, mode, ckpt, name = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    dp, tp = (2, 2) if mode == "save" else (int(sys.argv[5]), int(sys.argv[6]))
    if dp * tp > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    steps = list(tokens(BATCH * STEPS, GQA).split(BATCH))
    optimizer = name
    result: dict[str, Any] = {"rank": rank, "layout": f"{dp}x{tp}"}
    if mode == "save":
        model, opt, dp_rank = build(optimizer, dp, tp, seed=0)
        train(model, opt, steps[:SAVE_AT], dp, dp_rank)
        dcp.save(state(model, opt), checkpoint_id=ckpt / name)
        train(model, opt, steps[SAVE_AT:], dp, dp_rank)
        final = full_params(model)
        if rank == 0:
            torch.save(final, ckpt / f"{name}.final.pt")
    else:
        model, opt, dp_rank = build(optimizer, dp, tp, seed=7)  # other weights: all from the file
        loaded = state(model, opt)
        dcp.load(loaded, checkpoint_id=ckpt / name)
        set_model_state_dict(model, loaded["model"])
        set_optimizer_state_dict(model, opt, loaded["optim"])
        train(model, opt, steps[SAVE_AT:], dp, dp_rank)
        expected = torch.load(ckpt / f"{name}.final.pt")
        result["param_rel_diff"] = max_rel(full_params(model), expected)
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
