"""Block layouts on a 2×2 (data_parallel, tensor_parallel) mesh of 4 gloo ranks; run by ``test_twod.py``.

Usage: ``python job_twod.py OUT`` on 4 ranks. Each rank writes ``OUT/rank{r}.json`` (measurements
only, nothing is asserted here):

* ``mapping``: for every hand-placed layout and shape, whether the rows × columns that
  :class:`~lightning_muon.distributed.block_layout.BlockLayout` gives each rank are what torch's
  ``distribute_tensor`` puts there, and whether ``DTensor.from_local(...).full_tensor()`` of those
  blocks of an ``arange`` gives the ``arange`` back;
* ``hand``: every optimizer (and a few variants) on one optimizer holding all hand-placed
  matrices (two per layout and shape, so buckets hold several), ``STEPS`` steps with gradients
  drawn the same on every rank, against one process on the full tensors: the largest relative
  difference of the parameters and of the state, comparing both the full tensors and every rank's
  local part with torch's own split of the one-process tensors;
* ``model``: ``parallelize_module`` (colwise/rowwise pairs) then ``fully_shard``, uneven sizes, against
  one process, for every optimizer; the placements and whether each rank's storage is the block
  the layout names;
* ``refusals``: a ``Partial`` parameter and a custom uneven shard, with the weights before and after.
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

from dist_launch import error_text  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.distributed.tensor import (  # noqa: E402
    DTensor,
    Partial,
    Replicate,
    Shard,
    distribute_tensor,
)
from torch.distributed.tensor.parallel import (  # noqa: E402
    ColwiseParallel,
    RowwiseParallel,
    parallelize_module,
)
from torch.distributed.tensor.placement_types import _StridedShard  # noqa: E402

import lightning_muon.distributed as lmd  # noqa: E402
from lightning_muon.distributed.block_layout import BlockLayout  # noqa: E402
from lightning_muon.optim.registry import OPTIMIZERS  # noqa: E402

STEPS = 3
LAYOUTS = {
    "S0,S1": (Shard(0), Shard(1)),
    "S1,S0": (Shard(1), Shard(0)),
    "S0,S0": (Shard(0), Shard(0)),
    "S1,S1": (Shard(1), Shard(1)),
    "_S0,S0": (_StridedShard(0, split_factor=2), Shard(0)),
    "_S1,S1": (_StridedShard(1, split_factor=2), Shard(1)),
    "_S0,S1": (_StridedShard(0, split_factor=2), Shard(1)),
    "R,S1": (Replicate(), Shard(1)),
    "S1,R": (Shard(1), Replicate()),
    "R,S0 (HSDP)": (Replicate(), Shard(0)),
    "S0,R": (Shard(0), Replicate()),
}
SHAPES = ((6, 10), (7, 5), (3, 4), (6, 4, 2))
VARIANTS = [(name, {}) for name in OPTIMIZERS] + [
    ("normuon", {"scale": "keller", "nesterov": True}),  # ‖O‖_F from row sums
    ("adamuon", {"scale": "keller"}),
    ("muon", {"scale": "rms"}),
    ("spectral_muon", {"direction": "momentum", "power": 0.0, "ns_steps": 5}),
]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) if b.numel() else 0.0


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def torch_split(t: torch.Tensor, mesh: Any, placements: tuple) -> torch.Tensor:
    """``t``'s local part on this rank as torch splits it (no communication)."""
    return distribute_tensor(t, mesh, list(placements), src_data_rank=None).to_local()


def block_of(full_tensor: torch.Tensor, layout: BlockLayout, rank: int) -> torch.Tensor:
    """The rows × columns ``layout`` names for ``rank``, cut from a full tensor."""
    matrix = full_tensor.reshape(layout.matrix)
    rows = torch.cat(
        [torch.arange(a, b) for a, b in layout.rows[rank]] or [torch.zeros(0, dtype=torch.long)]
    )
    cols = torch.cat(
        [torch.arange(a, b) for a, b in layout.cols[rank]] or [torch.zeros(0, dtype=torch.long)]
    )
    return matrix[rows][:, cols].reshape(layout.local_shape(rank))


def mapping(mesh: Any) -> dict[str, Any]:
    out = {}
    for label, placements in LAYOUTS.items():
        for shape in SHAPES:
            A = torch.arange(float(torch.Size(shape).numel())).reshape(shape)
            layout = BlockLayout("w", shape, mesh, placements)
            mine = block_of(A, layout, dist.get_rank())
            stride = torch.empty(shape).stride()
            back = DTensor.from_local(
                mine, mesh, placements, run_check=False, shape=shape, stride=stride
            )
            out[f"{label} {shape}"] = {
                "torch_split_equal": bool(torch.equal(torch_split(A, mesh, placements), mine)),
                "full_tensor_equal": bool(torch.equal(back.full_tensor(), A)),
            }
    return out


def hand_params() -> list[tuple[str, tuple, torch.Tensor]]:
    """(name, placements, full initial value) of every hand-placed matrix: two per layout and shape."""
    g = torch.Generator().manual_seed(0)
    items = []
    for label, placements in LAYOUTS.items():
        for shape in SHAPES:
            for copy in range(2):
                items.append(
                    (f"{label} {shape} #{copy}", placements, torch.randn(shape, generator=g))
                )
    return items


def hand(mesh: Any, name: str, extra: dict[str, Any]) -> dict[str, Any]:
    cls = OPTIMIZERS[name]
    items = hand_params()
    names = [n for n, _, _ in items]
    sharded = [
        nn.Parameter(distribute_tensor(w.clone(), mesh, list(pl), src_data_rank=None))
        for _, pl, w in items
    ]
    plain = [nn.Parameter(w.clone()) for _, _, w in items]
    kwargs = {"lr": 0.02, "ns_dtype": "float32", **extra}
    opt = cls([{"params": sharded, "branch": "muon", "param_names": names}], **kwargs)
    ref = cls([{"params": plain, "branch": "muon", "param_names": names}], **kwargs)
    lmd.configure(ref, mode="local")
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        for p, q, (_, pl, w) in zip(sharded, plain, items, strict=True):
            G = torch.randn(w.shape, generator=g)
            q.grad = G.clone()
            p.grad = distribute_tensor(G, mesh, list(pl), src_data_rank=None)
        opt.step()
        ref.step()
    worst = {"param_full": 0.0, "param_local": 0.0, "state_full": 0.0, "state_local": 0.0}
    for p, q, (_, pl, _) in zip(sharded, plain, items, strict=True):
        worst["param_full"] = max(worst["param_full"], rel(full(p), q))
        worst["param_local"] = max(
            worst["param_local"], rel(p.to_local(), torch_split(q.detach(), mesh, pl))
        )
        for key, value in ref.state[q].items():
            got = opt.state[p][key]
            worst["state_full"] = max(worst["state_full"], rel(full(got), value))
            if isinstance(got, DTensor):
                want = torch_split(value, mesh, tuple(got.placements))
                worst["state_local"] = max(worst["state_local"], rel(got.to_local(), want))
        assert set(opt.state[p]) == set(ref.state[q]), (set(opt.state[p]), set(ref.state[q]))
    engine = lmd.engine_of(opt)
    return {
        **worst,
        "block_params": len(engine.blocks.layouts) if engine.blocks else 0,
        "row_params": sum(layout is not None for layout in engine.layouts.values()),
        "orthogonalized_per_step": engine.stats.orthogonalized / STEPS,
        "matrices": len(items),
    }


class Net(nn.Module):
    """colwise → rowwise → colwise → rowwise, no biases. The TP-split dims are even (torch's
    parallel styles need it for the activations); uneven blocks are the hand-placed layouts'."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(5, 8, bias=False), nn.Linear(8, 6, bias=False)
        self.fc3, self.fc4 = nn.Linear(6, 10, bias=False), nn.Linear(10, 5, bias=False)
        self.mix = nn.Linear(5, 5, bias=False)  # data-parallel only: FSDP2 Shard(0) rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc2(torch.tanh(self.fc1(x)))
        x = self.fc4(torch.tanh(self.fc3(x)))
        return self.mix(torch.tanh(x))


PLAN = {
    "fc1": ColwiseParallel(),
    "fc2": RowwiseParallel(),
    "fc3": ColwiseParallel(),
    "fc4": RowwiseParallel(),
}


def model_run(mesh: Any, name: str) -> dict[str, Any]:
    cls = OPTIMIZERS[name]
    original = Net()
    model = Net()
    parallelize_module(model, mesh["tensor_parallel"], PLAN)
    fully_shard(model, mesh=mesh["data_parallel"])
    params = dict(model.named_parameters())
    ref_params = dict(original.named_parameters())
    stored = {}
    for n, p in params.items():  # each rank's storage is the block its layout names
        if len(p.device_mesh.mesh.shape) == 2:
            layout = BlockLayout(n, tuple(p.shape), p.device_mesh, tuple(p.placements))
            stored[n] = bool(
                torch.equal(p.to_local(), block_of(ref_params[n].detach(), layout, dist.get_rank()))
            )
    names = list(params)
    kwargs = {"lr": 0.02, "ns_dtype": "float32"}
    opt = cls([{"params": list(params.values()), "branch": "muon", "param_names": names}], **kwargs)
    ref = cls(
        [{"params": list(ref_params.values()), "branch": "muon", "param_names": names}], **kwargs
    )
    lmd.configure(ref, mode="local")
    dp_rank = mesh["data_parallel"].get_local_rank()
    g = torch.Generator().manual_seed(2)
    for _ in range(STEPS):
        data = torch.randn(2, 3, 5, generator=g)
        opt.zero_grad(set_to_none=True)
        model(data[dp_rank]).square().mean().backward()
        opt.step()
        ref.zero_grad(set_to_none=True)
        torch.stack([original(x).square().mean() for x in data]).mean().backward()
        ref.step()
    state = max(
        rel(full(opt.state[params[n]][k]), v)
        for n in names
        for k, v in ref.state[ref_params[n]].items()
    )
    return {
        "param_rel_diff": max(rel(full(params[n]), ref_params[n]) for n in names),
        "state_rel_diff": state,
        "placements": {n: [str(pl) for pl in p.placements] for n, p in params.items()},
        "storage_is_block": stored,
    }


def refusals(mesh: Any) -> dict[str, Any]:
    from lightning_muon import NorMuon

    out: dict[str, Any] = {}
    torch.manual_seed(0)
    keep = nn.Parameter(distribute_tensor(torch.randn(6, 10), mesh, [Shard(0), Shard(1)]))
    partial = nn.Parameter(DTensor.from_local(torch.randn(3, 4), mesh, [Shard(0), Partial()]))
    before = (keep.to_local().clone(), partial.to_local().clone())
    opt = NorMuon(
        [
            {
                "params": [keep, partial],
                "branch": "muon",
                "param_names": ["fc.weight", "attn.proj.weight"],
            }
        ]
    )
    keep.grad = distribute_tensor(torch.ones(6, 10), mesh, [Shard(0), Shard(1)])
    partial.grad = DTensor.from_local(torch.ones(3, 4), mesh, [Shard(0), Partial()])
    out["partial"] = error_text(opt.step)
    out["partial_unchanged"] = bool(
        torch.equal(before[0], keep.to_local())
        and torch.equal(before[1], partial.to_local())
        and not opt.state
    )
    # 7 rows as 3 + 4 over the data-parallel ranks: not torch.chunk's 4 + 3
    rows = 3 if mesh["data_parallel"].get_local_rank() == 0 else 4
    uneven = nn.Parameter(
        DTensor.from_local(
            torch.randn(rows, 2),
            mesh,
            [Shard(0), Shard(1)],
            run_check=False,
            shape=(7, 4),
            stride=(4, 1),
        )
    )
    uneven.grad = DTensor.from_local(
        torch.ones(rows, 2),
        mesh,
        [Shard(0), Shard(1)],
        run_check=False,
        shape=(7, 4),
        stride=(4, 1),
    )
    opt = NorMuon([{"params": [uneven], "branch": "muon", "param_names": ["mlp.proj.weight"]}])
    out["uneven"] = error_text(opt.step)
    return out


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("data_parallel", "tensor_parallel"))
    results: dict[str, Any] = {"rank": rank, "mapping": mapping(mesh), "hand": {}, "model": {}}
    for name, extra in VARIANTS:
        results["hand"][f"{name} {extra}"] = hand(mesh, name, extra)
    for name in OPTIMIZERS:
        results["model"][name] = model_run(mesh, name)
    results["refusals"] = refusals(mesh)
    (out / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
