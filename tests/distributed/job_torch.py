"""Distributed checks in plain PyTorch on gloo ranks; run by ``test_sharded_training.py``.

Usage: ``RANK=r WORLD_SIZE=2 MASTER_ADDR=… MASTER_PORT=… python job_torch.py OUT [ONE_RANK_CHECKPOINT]``.
Each rank writes ``OUT/rank{r}.json`` (measurements, asserted by the test) and rank 0 writes the
tensors the test compares in ``OUT/*.pt``. Everything is measured, nothing is asserted here, so a
failing check shows up as one failing test with its numbers.
"""

from __future__ import annotations

import functools
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

import torch.distributed.checkpoint as dcp  # noqa: E402
from counting import count_orthogonalized  # noqa: E402
from dist_launch import error_text  # noqa: E402
from tiny_transformer import Block, batches, loss_fn, make_model  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.checkpoint.state_dict import (  # noqa: E402
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.distributed.tensor import DTensor, Partial  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import lightning_muon.distributed as lmd  # noqa: E402
from lightning_muon import Muon, NorMuon  # noqa: E402
from lightning_muon.optim.registry import OPTIMIZERS  # noqa: E402

STEPS = 5
#: Every collective a step could issue; each is wrapped and counted while ``optimizer.step()`` runs.
COLLECTIVES = (
    "all_to_all_single", "all_to_all", "all_gather_into_tensor", "all_gather", "all_reduce", "broadcast",
    "reduce_scatter_tensor", "reduce_scatter", "reduce", "gather", "scatter", "send", "recv", "isend",
    "irecv", "barrier",
)  # fmt: skip
VARIANTS = [(name, {}) for name in OPTIMIZERS] + [
    ("normuon", {"scale": "keller", "nesterov": True}),  # Frobenius matching: 2 sums per bucket
    ("muon", {"scale": "rms"}),
    # 5 steps: the official 15 Jordan steps amplify round-off on ill-conditioned momenta (one process
    # already changes by percents when only the batching of the Newton-Schulz call changes)
    ("spectral_muon", {"direction": "momentum", "power": 0.0, "ns_steps": 5}),
    ("spectral_muon", {"power": 0.25, "spectral_method": "svd"}),
]


class CountCollectives:
    """Count calls of every ``torch.distributed`` collective while active (by kind)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __enter__(self) -> CountCollectives:
        self.saved = {n: getattr(dist, n) for n in COLLECTIVES if hasattr(dist, n)}
        for name, fn in self.saved.items():
            setattr(dist, name, self._wrap(name, fn))
        return self

    def _wrap(self, name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return fn(*args, **kwargs)

        return counted

    def __exit__(self, *exc: Any) -> None:
        for name, fn in self.saved.items():
            setattr(dist, name, fn)


def shard(model: nn.Module, mesh: Any = None) -> nn.Module:
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((full(a) - b).abs().max() / b.abs().max().clamp_min(1e-30))


def step(
    model: nn.Module, opt: Any, tokens: torch.Tensor, counter: CountCollectives | None = None
) -> None:
    opt.zero_grad(set_to_none=True)
    loss_fn(model, tokens).backward()
    if counter is None:
        opt.step()
    else:
        with counter:
            opt.step()


def local_reference(
    cls: type, kwargs: dict[str, Any], data: list[torch.Tensor]
) -> tuple[nn.Module, Any]:
    model = make_model()
    opt = cls(model, **kwargs)
    lmd.configure(opt, mode="local")  # the single-process algorithm, no communication
    for tokens in data:
        step(model, opt, tokens)
    return model, opt


def parity(data: list[torch.Tensor], rank: int) -> list[dict[str, Any]]:
    """Every optimizer: 5 FSDP2 steps against 5 single-process steps; collectives and NS share."""
    out = []
    for name, kwargs in VARIANTS:
        cls = OPTIMIZERS[name]
        ref, ref_opt = local_reference(cls, kwargs, data)
        model = shard(make_model())
        opt = cls(model, **kwargs)
        ns_calls = count_orthogonalized(opt)
        per_step = []
        for tokens in data:
            counter = CountCollectives()
            step(model, opt, tokens, counter)
            per_step.append(dict(counter.calls))
        engine = lmd.engine_of(opt)
        flights = engine.planned(opt.param_groups[0])
        params = dict(zip(dict(ref.named_parameters()), model.parameters(), strict=True))
        ref_params = dict(ref.named_parameters())
        state_diffs = [
            rel(opt.state[p][k], ref_opt.state[ref_params[n]][k])
            for n, p in params.items()
            for k, v in opt.state[p].items()
            if isinstance(v, torch.Tensor) and v.ndim
        ]
        muon = opt.param_groups[0]["param_names"]
        out.append(
            {
                "name": name,
                "kwargs": kwargs,
                "param_rel_diff": max(rel(params[n], ref_params[n]) for n in params),
                "state_rel_diff": max(state_diffs),
                "state_is_dtensor": all(
                    isinstance(v, DTensor) and v.placements == params[n].placements
                    for n in muon
                    for k, v in opt.state[params[n]].items()
                    if k != "step"
                ),
                "collectives_per_step": per_step,
                "engine_calls": dict(engine.stats.calls),
                "buckets": len(flights),
                "bucket_sizes": [len(b.params) for b in flights],
                "matrix_sums_per_bucket": _sums_per_bucket(name, kwargs),
                "ns_matrices_per_step": sum(ns_calls) / STEPS,
                "ns_calls": len(ns_calls),
                "owned": sorted(n for n, o in engine.owners().items() if o == rank),
                "matrices": muon,
                "ns_share": lmd.ns_flop_shares(engine),
            }
        )
    return out


def _sums_per_bucket(name: str, kwargs: dict[str, Any]) -> int:
    """Whole-matrix sums per bucket in the single-process algorithm (an oracle from the papers)."""
    scale = kwargs.get("scale", {"normuon": "rms", "adamuon": "rms"}.get(name, "other"))
    if name in ("normuon", "adamuon"):
        return 1 if scale == "rms" else 2  # RMS alignment of Ô, or ‖O‖_F and ‖Ô‖_F
    return 1 if scale == "rms" else 0


def ddp_parity(data: list[torch.Tensor], rank: int, world: int) -> list[dict[str, Any]]:
    """DDP: each rank a slice of the batch; owner-computes; replicas stay bitwise equal."""
    out = []
    for name, cls in OPTIMIZERS.items():
        ref, _ = local_reference(cls, {}, data)
        model = make_model()
        ddp = DistributedDataParallel(model)
        opt = cls(model)
        ns_calls = count_orthogonalized(opt)
        per_step = []
        for tokens in data:
            counter = CountCollectives()
            part = tokens.chunk(world)[rank]
            opt.zero_grad(set_to_none=True)
            loss_fn(ddp, part).backward()
            with counter:
                opt.step()
            per_step.append(dict(counter.calls))
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        gathered = torch.empty(world * flat.numel())
        dist.all_gather_into_tensor(gathered, flat)
        engine = lmd.engine_of(opt)
        out.append(
            {
                "name": name,
                "param_rel_diff": max(
                    rel(p, q) for p, q in zip(model.parameters(), ref.parameters(), strict=True)
                ),
                "replicas_identical": bool((gathered.view(world, -1) == flat).all()),
                "layout": engine.layouts[id(model.blocks[0].fc.weight)].kind,
                "collectives_per_step": per_step,
                "buckets": len(engine.planned(opt.param_groups[0])),
                "ns_matrices_per_step": sum(ns_calls) / STEPS,
                "matrices": len(opt.param_groups[0]["params"]),
            }
        )
    return out


def hsdp_parity(data: list[torch.Tensor]) -> dict[str, Any]:
    """A 2-D (replicate, shard) mesh: the shard dimension is used, results equal one process."""
    mesh = init_device_mesh("cpu", (1, 2), mesh_dim_names=("replicate", "shard"))
    ref, _ = local_reference(NorMuon, {}, data)
    model = shard(make_model(), mesh)
    opt = NorMuon(model)
    for tokens in data:
        step(model, opt, tokens)
    layout = lmd.engine_of(opt).layouts[id(model.blocks[0].fc.weight)]
    return {
        "placements": str(model.blocks[0].fc.weight.placements),
        "layout": layout.kind,
        "layout_world": layout.world,
        "param_rel_diff": max(
            rel(p, q) for p, q in zip(model.parameters(), ref.parameters(), strict=True)
        ),
    }


def captured_directions(data: list[torch.Tensor]) -> dict[str, Any]:
    """``capture_directions`` on shards: an ``(m, n)`` DTensor whose full value is the one-process ``O``."""
    ref = make_model()
    ref_opt = NorMuon(ref)
    lmd.configure(ref_opt, mode="local")
    model = shard(make_model())
    opt = NorMuon(model)
    names = ("blocks.0.fc.weight", "blocks.1.gate.weight")  # uneven rows; an empty shard on rank 1
    for m, o in ((ref, ref_opt), (model, opt)):
        params = dict(m.named_parameters())
        o.capture_directions([params[n] for n in names])
        step(m, o, data[0])
    out = {}
    for n in names:
        got = opt.captured_directions[dict(model.named_parameters())[n]]
        want = ref_opt.captured_directions[dict(ref.named_parameters())[n]]
        out[n] = {
            "type": type(got).__name__,
            "shape": list(got.shape),
            "rel_diff": rel(got, want),
        }
    return out


def refusals() -> dict[str, str]:
    """Unsupported layouts (and FSDP1 without original parameters) must raise with a message that names the fix."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    mesh = init_device_mesh("cpu", (2,))
    out = {}

    def partial() -> None:  # pending sums: no rank holds the matrix's values
        torch.manual_seed(0)
        weight = nn.Parameter(DTensor.from_local(torch.randn(8, 6), mesh, [Partial()]))
        opt = Muon([{"params": [weight], "branch": "muon", "param_names": ["attn.proj.weight"]}])
        weight.grad = DTensor.from_local(torch.ones(8, 6), mesh, [Partial()])
        opt.step()

    out["partial"] = error_text(partial)

    def local_mode_sharded() -> None:
        model = shard(make_model())
        opt = NorMuon(model)
        lmd.configure(opt, mode="local")
        loss_fn(model, batches(1)[0]).backward()
        opt.step()

    out["local_mode_sharded"] = error_text(local_mode_sharded)

    def different_parameters() -> None:  # e.g. pipeline stages: not data-parallel replicas
        width = 8 + dist.get_rank()
        model = nn.Sequential(nn.Linear(4, width), nn.Linear(width, width), nn.Linear(width, 2))
        opt = Muon(model)
        model(torch.randn(3, 4)).sum().backward()
        opt.step()

    out["different_parameters"] = error_text(different_parameters)
    for orig in (True, False):
        wrapped = FullyShardedDataParallel(
            make_model(),
            auto_wrap_policy=ModuleWrapPolicy({Block}),
            use_orig_params=orig,
            device_id=torch.device("cpu"),
        )
        out[f"fsdp1_orig{orig}_module"] = error_text(lambda w=wrapped: NorMuon(w))
        out[f"fsdp1_orig{orig}_named"] = error_text(lambda w=wrapped: NorMuon(w.named_parameters()))
        out[f"fsdp1_orig{orig}_params"] = error_text(lambda w=wrapped: NorMuon(w.parameters()))
    # Lightning's FSDPStrategy wraps the LightningModule itself: its own modules are not FSDP instances
    inner = make_model()
    wrapper = FullyShardedDataParallel(inner, use_orig_params=True, device_id=torch.device("cpu"))
    out["fsdp1_root_wrapped_inner_module"] = error_text(lambda: NorMuon(inner))
    del wrapper
    return out


def nonfinite_and_missing(rank: int) -> dict[str, Any]:
    """A non-finite gradient on one rank's shard only: both ranks skip (or both raise)."""
    out: dict[str, Any] = {}
    data = batches(2, seed=3)
    for mode in ("skip", "raise"):
        model = shard(make_model())
        opt = NorMuon(model, nonfinite=mode)
        step(model, opt, data[0])
        before = [full(p).clone() for p in model.parameters()]
        opt.zero_grad()
        loss_fn(model, data[1]).backward()
        if rank == 1:
            model.blocks[0].fc.weight.grad.to_local()[0, 0] = float("inf")
        out[mode] = error_text(opt.step)
        out[f"{mode}_skipped_steps"] = opt.skipped_steps
        out[f"{mode}_unchanged"] = all(
            torch.equal(full(p), b) for p, b in zip(model.parameters(), before, strict=True)
        )
    model = shard(make_model())
    opt = NorMuon(model)
    loss_fn(model, data[0]).backward()
    if rank == 1:
        model.blocks[1].out.weight.grad = None
    out["missing"] = error_text(opt.step)
    return out


def gradients_on_the_first_step(rank: int) -> dict[str, Any]:
    """No gradient on one rank, or on every rank, at the first step: every rank raises the same error."""
    out: dict[str, Any] = {}
    tokens = batches(1, seed=4)[0]
    for case in ("one_rank", "every_rank"):
        model = shard(make_model())
        opt = NorMuon(model)
        if case == "one_rank":
            loss_fn(model, tokens).backward()  # FSDP2's backward is collective: every rank runs it
            if rank == 1:
                opt.zero_grad(set_to_none=True)
        out[case] = error_text(opt.step)
    return out


def bf16_newton_schulz(data: list[torch.Tensor]) -> dict[str, Any]:
    """The CUDA default (bf16 Newton–Schulz) emulated on CPU: the default transfer equals one process."""
    out: dict[str, Any] = {}
    # lr 1e-3: a bf16 result flips its last bit when the fp32 input differs in its last bit (the
    # sharded forward sums in another order); a small lr keeps that from compounding over the steps
    settings = {"ns_dtype": "bfloat16", "lr": 1e-3}
    ref, _ = local_reference(NorMuon, settings, data)
    for transfer in (None, "bfloat16"):
        model = shard(make_model())
        opt = NorMuon(model, **settings)
        lmd.configure(opt, transfer_dtype=transfer)
        for tokens in data:
            step(model, opt, tokens)
        stats = lmd.engine_of(opt).stats
        out[str(transfer)] = {
            "param_rel_diff": max(
                rel(p, q) for p, q in zip(model.parameters(), ref.parameters(), strict=True)
            ),
            "gather_bytes": stats.bytes["gather"],
            "scatter_bytes": stats.bytes["scatter"],
        }
    return out


def matrices_added_after_the_first_step(data: list[torch.Tensor]) -> dict[str, Any]:
    """A matrix group added with ``add_param_group`` after step 1 is orthogonalized whole, as in one process."""

    def run(model: nn.Module, local: bool) -> tuple[nn.Module, Any]:
        named = dict(model.named_parameters())
        late = ["blocks.0.fc.weight", "blocks.1.fc.weight"]
        early = [
            n for n, p in named.items() if p.ndim == 2 and n not in late and not n.startswith("wte")
        ]
        rest = [n for n in named if n not in early and n not in late]
        opt = Muon(
            [
                {"params": [named[n] for n in early], "param_names": early, "branch": "muon"},
                {"params": [named[n] for n in rest], "param_names": rest, "branch": "adamw"},
            ]
        )
        if local:
            lmd.configure(opt, mode="local")
        for i, tokens in enumerate(data[:4]):
            if i == 1:
                opt.add_param_group(
                    {"params": [named[n] for n in late], "param_names": late, "branch": "muon"}
                )
            for n in late:
                named[n].grad = None
            step(model, opt, tokens)
        return model, opt

    ref, _ = run(make_model(), local=True)
    model, opt = run(shard(make_model()), local=False)
    engine = lmd.engine_of(opt)
    return {
        "param_rel_diff": max(
            rel(p, q) for p, q in zip(model.parameters(), ref.parameters(), strict=True)
        ),
        "late_layouts": sorted(engine.layouts[id(p)].kind for p in opt.param_groups[2]["params"]),
    }


def statistics_modes(data: list[torch.Tensor], rank: int) -> dict[str, Any]:
    """One RMS-aligned Muon step (λ = 0): update RMS 0.2·lr over each matrix (exact) or each shard (paper)."""
    out: dict[str, Any] = {}
    lr = 0.01
    for statistics in lmd.STATISTICS:
        model = shard(make_model())
        opt = Muon(model, lr=lr, scale="rms", weight_decay=0.0)
        lmd.configure(opt, statistics=statistics)
        names = opt.param_groups[0]["param_names"]
        params = dict(model.named_parameters())
        before = {n: params[n].to_local().clone() for n in names}
        step(model, opt, data[0])
        shard_rms, matrix_rms = {}, {}
        for n in names:
            delta = params[n].to_local() - before[n]
            if delta.numel():
                shard_rms[n] = float(delta.square().mean().sqrt() / lr)
            total = torch.tensor(
                [delta.square().sum().item(), float(delta.numel())], dtype=torch.float64
            )
            dist.all_reduce(total)
            matrix_rms[n] = float((total[0] / total[1]).sqrt() / lr)
        out[statistics] = {"shard_rms": shard_rms, "matrix_rms": matrix_rms}
    return out


def transfer_dtypes(data: list[torch.Tensor]) -> dict[str, Any]:
    """bf16 transfers halve the bytes and stay close (bf16 round-off) to the fp32 result."""
    out: dict[str, Any] = {}
    ref, _ = local_reference(Muon, {}, data)
    for dtype in ("float32", "bfloat16"):
        model = shard(make_model())
        opt = Muon(model)
        lmd.configure(opt, transfer_dtype=dtype)
        for tokens in data:
            step(model, opt, tokens)
        engine = lmd.engine_of(opt)
        out[dtype] = {
            "all_to_all_bytes": engine.stats.bytes["gather"] + engine.stats.bytes["scatter"],
            "all_to_all": engine.stats.calls["gather"] + engine.stats.calls["scatter"],
            "param_rel_diff": max(
                rel(p, q) for p, q in zip(model.parameters(), ref.parameters(), strict=True)
            ),
        }
    return out


def save_on_two(data: list[torch.Tensor], out_dir: Path, rank: int) -> dict[str, Any]:
    """3 steps, distributed checkpoint (sharded and full), 2 more steps; the test resumes on one rank."""
    model = shard(make_model())
    opt = NorMuon(model, lr=0.01)
    for i, tokens in enumerate(data):
        if i == 3:
            state = {
                "model": get_model_state_dict(model),
                "optim": get_optimizer_state_dict(model, opt),
            }
            dcp.save(state, checkpoint_id=out_dir / "two_ranks_dcp")
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            full_state = {
                "model": get_model_state_dict(model, options=options),
                "optim": get_optimizer_state_dict(model, opt, options=options),
            }
            if rank == 0:
                torch.save(full_state, out_dir / "two_ranks_full.pt")
        step(model, opt, tokens)
    final = {n: full(p) for n, p in model.named_parameters()}
    if rank == 0:
        torch.save(final, out_dir / "two_ranks_final.pt")
    return {"saved": True}


def load_from_one(
    data: list[torch.Tensor], checkpoint: Path, out_dir: Path, rank: int
) -> dict[str, Any]:
    """Load a checkpoint written by one process into FSDP2 shards and continue for 2 steps."""
    model = shard(make_model(seed=7))  # different weights: everything must come from the checkpoint
    opt = NorMuon(model, lr=0.01)
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(state, checkpoint_id=checkpoint)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, opt, state["optim"])
    fc = model.blocks[0].fc.weight
    loaded = {k: type(v).__name__ for k, v in opt.state[fc].items()}
    for tokens in data[3:]:
        step(model, opt, tokens)
    final = {n: full(p) for n, p in model.named_parameters()}
    if rank == 0:
        torch.save(final, out_dir / "one_to_two_final.pt")
    return {"state_types": loaded, "step": float(opt.state[fc]["step"])}


def main() -> None:
    out_dir = Path(sys.argv[1])
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    data = batches(STEPS)
    results: dict[str, Any] = {"rank": rank, "world": world}
    results["parity"] = parity(data, rank)
    results["ddp"] = ddp_parity(data, rank, world)
    results["hsdp"] = hsdp_parity(data)
    results["captured"] = captured_directions(data)
    results["refusals"] = refusals()
    results["nonfinite"] = nonfinite_and_missing(rank)
    results["statistics"] = statistics_modes(data, rank)
    results["transfer"] = transfer_dtypes(data)
    results["first_step"] = gradients_on_the_first_step(rank)
    results["bf16_newton_schulz"] = bf16_newton_schulz(data)
    results["added_group"] = matrices_added_after_the_first_step(data)
    results["save_on_two"] = save_on_two(data, out_dir, rank)
    if len(sys.argv) > 2:
        results["load_from_one"] = load_from_one(data, Path(sys.argv[2]), out_dir, rank)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
