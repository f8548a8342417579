"""Host reads per distributed step, and gradients that change mid-training; run by ``test_host_reads_distributed.py``.

Usage: ``RANK=r WORLD_SIZE=2 MASTER_ADDR=… MASTER_PORT=… python job_host_reads.py OUT``.
Three layouts on gloo ranks: FSDP2 (``fully_shard``), replicated plain tensors (DDP-style: every
rank computes the same gradient) and FSDP1 (``FullyShardedDataParallel(use_orig_params=True)``).
Each rank writes ``OUT/rank{r}.json``; nothing is asserted here.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE), str(HERE.parent / "optim")]

from dist_launch import error_text  # noqa: E402
from host_reads import count_host_reads  # noqa: E402
from job_torch import full, shard  # noqa: E402
from tiny_transformer import Block, batches, loss_fn, make_model  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: E402
from torch.distributed.fsdp.wrap import ModuleWrapPolicy  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

from lightning_muon.optim.registry import OPTIMIZERS  # noqa: E402

LAYOUTS = ("fsdp2", "replicated", "fsdp1")
COUNTED = ("muon", "normuon", "adamuon")
#: The matrix one or both ranks drop at step 4 (rank 1 holds elements of it under every layout).
DROPPED = "blocks.1.fc.weight"
STEPS = 5


def build(layout: str, name: str, mode: str) -> tuple[nn.Module, Any, dict[str, torch.Tensor]]:
    """``(model, optimizer, parameters by name)`` of one layout."""
    if layout == "fsdp2":
        model = shard(make_model())
        opt = OPTIMIZERS[name](model, nonfinite=mode)
    elif layout == "replicated":
        model = make_model()
        opt = OPTIMIZERS[name](model, nonfinite=mode)
    else:
        model = FSDP(
            make_model(),
            auto_wrap_policy=ModuleWrapPolicy({Block}),
            use_orig_params=True,
            device_id=torch.device("cpu"),
        )
        opt = OPTIMIZERS[name](model.parameters(), nonfinite=mode)
    named = {n.replace("_fsdp_wrapped_module.", ""): p for n, p in model.named_parameters()}
    return model, opt, named


def backward(model: nn.Module, opt: Any, tokens: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss_fn(model, tokens).backward()


def weights(layout: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight in full (a collective under FSDP: every rank calls it at the same point)."""
    if layout == "fsdp1":
        with FSDP.summon_full_params(model):
            return {
                n.replace("_fsdp_wrapped_module.", ""): p.detach().clone()
                for n, p in model.named_parameters()
            }
    return {n: full(p).detach().clone() for n, p in model.named_parameters()}


def state_copy(opt: Any) -> dict[int, dict[str, torch.Tensor]]:
    return {
        id(p): {k: full(v).clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
        for p, s in opt.state.items()
    }


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[i].keys() == b[i].keys() and all(torch.equal(a[i][k], b[i][k]) for k in a[i]) for i in a
    )


def equal_across_ranks(values: dict[str, torch.Tensor]) -> bool:
    flat = torch.cat([v.reshape(-1).float() for v in values.values()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(g, flat) for g in gathered)


def host_reads(layout: str, data: list[torch.Tensor]) -> dict[str, Any]:
    """Host reads of steps 3–5 (after 2 warm-up steps), per optimizer and mode."""
    out: dict[str, Any] = {}
    for name in COUNTED:
        for mode in ("skip", "raise"):
            model, opt, _ = build(layout, name, mode)
            counts, kinds = [], {}
            for i, tokens in enumerate(data):
                backward(model, opt, tokens)
                if i < 2:
                    opt.step()
                    continue
                with count_host_reads() as reads:
                    opt.step()
                counts.append(sum(reads.values()))
                kinds = dict(reads)
            out[f"{name}_{mode}"] = {"counts": counts, "kinds": kinds}
    return out


def changed_presence(layout: str, data: list[torch.Tensor], rank: int) -> dict[str, Any]:
    """At step 4: ``DROPPED``'s gradient dropped on rank 1 only (``partial``) or on both ranks
    (``everywhere``), or one element of rank 1's part of it made infinite (``nonfinite``)."""
    out: dict[str, Any] = {}
    cases = [(c, m) for c in ("partial", "nonfinite") for m in ("raise", "skip")]
    for case, mode in [*cases, ("everywhere", "skip")]:
        model, opt, named = build(layout, "normuon", mode)
        for tokens in data[:3]:
            backward(model, opt, tokens)
            opt.step()
        backward(model, opt, data[3])
        dropper = case == "everywhere" or (case == "partial" and rank == 1)
        held = named[DROPPED].grad is not None
        grads = {n: p.grad for n, p in named.items()}
        if dropper:
            named[DROPPED].grad = None
        if case == "nonfinite" and rank == 1:
            grad = named[DROPPED].grad
            (grad.to_local() if isinstance(grad, DTensor) else grad).view(-1)[0] = float("inf")
        before, state = weights(layout, model), state_copy(opt)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            error = error_text(opt.step)
        after = weights(layout, model)
        result = {
            "held": held,
            "error": error,
            "warnings": [str(w.message) for w in caught if issubclass(w.category, UserWarning)],
            "unchanged": all(torch.equal(before[n], after[n]) for n in before),
            "state_unchanged": same_state(state, state_copy(opt)),
            "changed": sorted(n for n in before if not torch.equal(before[n], after[n])),
            "skipped_steps": opt.skipped_steps,
            "grads_restored": all(
                named[n].grad is (None if dropper and n == DROPPED else g) for n, g in grads.items()
            ),
            "weights_equal_across_ranks": equal_across_ranks(after),
        }
        backward(model, opt, data[4])  # every gradient again: the next step trains
        before = weights(layout, model)
        result["next_step"] = error_text(opt.step)
        result["next_step_moved"] = not all(
            torch.equal(before[n], v) for n, v in weights(layout, model).items()
        )
        result["next_equal_across_ranks"] = equal_across_ranks(weights(layout, model))
        result["next_skipped_steps"] = opt.skipped_steps
        out[f"{case}_{mode}"] = result
    return out


def main() -> None:
    out_dir = Path(sys.argv[1])
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = dist.get_rank()
    data = batches(STEPS, seed=7)
    results: dict[str, Any] = {"rank": rank, "world": dist.get_world_size()}
    for layout in LAYOUTS:
        results[layout] = {
            "names": sorted(build(layout, "normuon", "skip")[2]),
            "host_reads": host_reads(layout, data),
            "changed_presence": changed_presence(layout, data, rank),
        }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
