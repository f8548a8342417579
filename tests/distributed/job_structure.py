"""Structured matrices on 2 gloo ranks; run by ``test_structure_distributed.py``.

Usage: ``RANK=r WORLD_SIZE=2 MASTER_ADDR=… MASTER_PORT=… python job_structure.py OUT``.
Each rank writes ``OUT/rank{r}.json``: the largest difference between the DDP run (owner-computes
for the plain matrix, blocks updated by each replica) and the one-process algorithm given the same
averaged gradients, the owners planned, and the error an FSDP2-sharded structured weight raises.
Nothing is asserted here.
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
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import lightning_muon.distributed as lmd  # noqa: E402
from lightning_muon.optim.registry import SPECS, available_names  # noqa: E402

STRUCTURE = {
    "*qkv.weight": {"split": "heads", "n_head": 4, "n_query_groups": 2},
    "*experts": "experts",
}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24, bias=False)  # (4 + 2·2) heads of 3 rows
        self.experts = nn.Parameter(torch.randn(3, 8, 24) * 0.2)
        self.fc = nn.Linear(8, 8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bn,emn->bm", self.qkv(x), self.experts)
        return self.fc(torch.tanh(y))


def ddp_against_one_process(name: str, rank: int) -> dict:
    torch.manual_seed(0)
    model = Net().double()
    reference = copy.deepcopy(model)
    ddp = DistributedDataParallel(model)
    opt = SPECS[name].build(model.named_parameters(), structure=STRUCTURE)
    ref = SPECS[name].build(reference.named_parameters(), structure=STRUCTURE)
    lmd.configure(ref, mode="local")  # the one-process algorithm
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
    for _ in range(3):
        opt.zero_grad()
        ddp(torch.randn(4, 8, dtype=torch.float64, generator=generator)).square().mean().backward()
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            q.grad = p.grad.clone()  # the averaged gradient
        opt.step()
        ref.step()
    diff = max(
        float((p - q).abs().max()) for p, q in zip(model.parameters(), reference.parameters())
    )
    engine = lmd.engine_of(opt)
    return {
        "diff": diff,
        "engine": type(engine).__name__,
        "owners": sorted(engine.owners()) if engine is not None else [],
        "weights": [p.detach().flatten()[:4].tolist() for p in model.parameters()],
    }


def fsdp2_refusal() -> str:
    torch.manual_seed(0)
    model = Net()
    mesh = init_device_mesh("cpu", (2,))
    fully_shard(model, mesh=mesh)
    try:
        SPECS["muon"].build(model.named_parameters(), structure=STRUCTURE)
    except ValueError as err:
        return str(err)
    return ""


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    result = {
        "rank": rank,
        "ddp": {n: ddp_against_one_process(n, rank) for n in available_names("muon")},
    }
    result["fsdp2_error"] = fsdp2_refusal()
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
