"""Structured matrices on 2 gloo ranks; run by ``test_structure_distributed.py``.

Usage: ``RANK=r WORLD_SIZE=2 MASTER_ADDR=… MASTER_PORT=… python job_structure.py OUT``.
Each rank writes ``OUT/rank{r}.json``, for every Muon-family optimizer, the largest difference
between a distributed run and the one-process algorithm given the same averaged gradients:

* DDP: owner-computes for the plain matrix, blocks updated by each replica;
* FSDP2 (``fully_shard``, experts sharded along dim 1): heads 0–1 of ``qkv`` lie whole on rank 0
  and 3–4 on rank 1 (updated where they are), head 2 straddles the two (gathered), and every
  expert is split over both ranks (gathered);

and the error an FSDP1 flat slice with a structure raises. Nothing is asserted here.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1])]

from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.distributed.tensor import DTensor, Shard  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import lightning_muon.distributed as lmd  # noqa: E402
from lightning_muon.optim.registry import SPECS, available_names  # noqa: E402

STRUCTURE = {
    "*qkv.weight": {"split": "heads", "n_head": 3, "n_query_groups": 1},
    "*experts": "experts",
}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 30, bias=False)  # (3 + 2·1) heads of 6 rows
        self.experts = nn.Parameter(torch.randn(3, 8, 30) * 0.2)
        self.fc = nn.Linear(8, 8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bn,emn->bm", self.qkv(x), self.experts)
        return self.fc(torch.tanh(y))


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def against_one_process(name: str, rank: int, wrap: str) -> dict:
    """3 steps of the wrapped model against one process fed the same (averaged) gradients."""
    torch.manual_seed(0)
    model = Net().double()
    reference = copy.deepcopy(model)
    if wrap == "ddp":
        forward = DistributedDataParallel(model)
    else:
        mesh = init_device_mesh("cpu", (2,))
        fully_shard(model, mesh=mesh, shard_placement_fn=lambda p: Shard(1 if p.ndim == 3 else 0))
        forward = model
    opt = SPECS[name].build(model.named_parameters(), structure=STRUCTURE)
    ref = SPECS[name].build(reference.named_parameters(), structure=STRUCTURE)
    lmd.configure(ref, mode="local")  # the one-process algorithm
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
    for _ in range(3):
        opt.zero_grad()
        x = torch.randn(4, 8, dtype=torch.float64, generator=generator)
        forward(x).square().mean().backward()
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            q.grad = _full(p.grad).clone()  # the averaged gradient
        opt.step()
        ref.step()
    diff = max(
        float((_full(p) - q).abs().max())
        for p, q in zip(model.parameters(), reference.parameters())
    )
    state_diff = max(
        float((_full(v) - ref.state[q][k]).abs().max())
        for p, q in zip(model.parameters(), reference.parameters())
        for k, v in opt.state[p].items()
    )
    engine = lmd.engine_of(opt)
    return {
        "diff": diff,
        "state_diff": state_diff,
        "engine": type(engine).__name__,
        "owners": sorted(engine.owners()) if engine is not None else [],
        "weights": [_full(p).detach().flatten()[:4].tolist() for p in model.parameters()],
        "state_shapes": {k: list(v.shape) for k, v in opt.state[model.experts].items()},
    }


def fsdp1_refusal() -> str:
    torch.manual_seed(0)
    model = FSDP(Net(), use_orig_params=True, device_id=torch.device("cpu"))
    try:
        SPECS["muon"].build(model, structure=STRUCTURE)
    except ValueError as err:
        return str(err)
    return ""


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    result: dict = {"rank": rank} | {
        wrap: {n: against_one_process(n, rank, wrap) for n in available_names("muon")}
        for wrap in ("ddp", "fsdp2")
    }
    result["fsdp1_error"] = fsdp1_refusal()
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
