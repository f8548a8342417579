"""FSDP1 (``FullyShardedDataParallel``, ``use_orig_params=True``) checks on gloo ranks; run by ``test_fsdp1.py``.

Usage: ``RANK=r WORLD_SIZE=W MASTER_ADDR=… MASTER_PORT=… python job_fsdp1.py OUT STRATEGY``.
Every rank trains the tiny transformer (blocks wrapped separately, so matrices are split mid-row
and some ranks hold empty slices) on the same batches, so FSDP's averaged gradient is the
one-process gradient, and compares the gathered weights with a one-process run of the same
optimizer. Each rank writes ``OUT/rank{r}.json``; nothing is asserted here.
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

from counting import count_orthogonalized  # noqa: E402
from job_torch import VARIANTS, CountCollectives, local_reference, step  # noqa: E402
from tiny_transformer import Block, batches, make_model  # noqa: E402
from torch.distributed.fsdp import CPUOffload, ShardingStrategy  # noqa: E402
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: E402
from torch.distributed.fsdp.wrap import ModuleWrapPolicy  # noqa: E402

import lightning_muon.distributed as lmd  # noqa: E402
from lightning_muon import NorMuon  # noqa: E402
from lightning_muon.optim.registry import OPTIMIZERS  # noqa: E402

STEPS = 4


def wrap(strategy: str, **kwargs: Any) -> FSDP:
    extra: dict[str, Any] = {}
    if strategy == "HYBRID_SHARD":  # replicate over pairs of ranks, shard within them when W = 4
        from torch.distributed.device_mesh import init_device_mesh

        world = dist.get_world_size()
        shard = 2 if world % 2 == 0 and world > 2 else world
        extra["device_mesh"] = init_device_mesh("cpu", (world // shard, shard))
    return FSDP(
        make_model(),
        auto_wrap_policy=ModuleWrapPolicy({Block}),
        use_orig_params=kwargs.pop("use_orig_params", True),
        device_id=torch.device("cpu"),
        sharding_strategy=getattr(ShardingStrategy, strategy),
        **extra,
        **kwargs,
    )


def gathered(model: FSDP) -> dict[str, torch.Tensor]:
    with FSDP.summon_full_params(model):
        return {
            n.replace("_fsdp_wrapped_module.", ""): p.detach().clone()
            for n, p in model.named_parameters()
        }


def parity(strategy: str, data: list[torch.Tensor]) -> list[dict[str, Any]]:
    out = []
    for name, kwargs in VARIANTS:
        cls = OPTIMIZERS[name]
        ref, _ = local_reference(cls, kwargs, data)
        expected = dict(ref.named_parameters())
        model = wrap(strategy)
        opt = cls(model.parameters(), **kwargs)  # plain tensors, as litgpt passes them
        calls = count_orthogonalized(opt)
        counters = []
        for tokens in data:
            counter = CountCollectives()
            step(model, opt, tokens, counter)
            counters.append(dict(counter.calls))
        weights = gathered(model)
        errors = {
            n: float((w - expected[n]).abs().max() / expected[n].abs().max().clamp_min(1e-30))
            for n, w in weights.items()
        }
        initial = dict(make_model().named_parameters())
        moved = max(float((w - initial[n]).abs().max()) for n, w in weights.items())
        engine = lmd.engine_of(opt)
        out.append(
            {
                "name": name,
                "kwargs": kwargs,
                "max_rel_error": max(errors.values()),
                "moved": moved,
                "worst": max(errors, key=errors.get),
                "muon_names": opt.routing.names("muon"),
                "ref_muon_names": ref_opt_names(cls, kwargs),
                "collectives_per_step": counters,
                "buckets": len(engine.planned(opt.param_groups[0])),
                "ns_matrices": sum(calls),
                "owners": engine.owners(),
                "bytes": engine.stats.bytes_sent,
                "empty_slices": sum(
                    s.numel == 0 for s in engine.slices.values() if len(s.shape) >= 2
                ),
                "mid_row_splits": sum(
                    s.numel and (s.start % s.matrix[1] or (s.start + s.numel) % s.matrix[1])
                    for s in engine.slices.values()
                    if len(s.shape) >= 2
                ),
            }
        )
    return out


def ref_opt_names(cls: type, kwargs: dict[str, Any]) -> list[str]:
    return cls(make_model(), **kwargs).routing.names("muon")


def refusals(strategy: str) -> dict[str, str]:
    def error(fn: Any) -> str:
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - the message is the measurement
            return f"{type(err).__name__}: {err}"
        return "no error"

    out = {
        "flat_parameters": error(
            lambda: NorMuon(wrap(strategy, use_orig_params=False).parameters())
        )
    }
    offloaded = wrap(strategy, cpu_offload=CPUOffload(offload_params=True))
    out["cpu_offload"] = error(lambda: NorMuon(offloaded.parameters()))
    model = wrap(strategy)
    opt = NorMuon(model.parameters())
    lmd.configure(opt, mode="local")
    out["local_mode"] = error(lambda: step(model, opt, batches(1)[0]))
    return out


def main() -> None:
    out_dir, strategy = Path(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    data = batches(STEPS)
    result: dict[str, Any] = {"rank": rank, "world": dist.get_world_size()}
    result["parity"] = parity(strategy, data)
    result["refusals"] = refusals(strategy)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
