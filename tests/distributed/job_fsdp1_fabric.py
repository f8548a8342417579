"""Checkpoints of every optimizer through Fabric's stock ``FSDPStrategy`` (FSDP1) on gloo ranks.

Usage: ``RANK=r WORLD_SIZE=W … python job_fsdp1_fabric.py OUT CKPT_DIR MODE`` with ``MODE``:

* ``save`` — for each state-dict type and optimizer: 3 steps, ``fabric.save``, 2 more steps
  (weights written to ``CKPT_DIR``); then a fresh model and optimizer ``fabric.load`` the
  checkpoint and take the same 2 steps (``resumed_identical``: bitwise equal weights);
* ``resume`` — on another world size: load the checkpoints written by ``save``, take the 2 steps
  and report the largest relative difference to the saving run's weights.

The only change to the stock strategy: FSDP1 on the CPU needs ``device_id=cpu``, which
``FSDPStrategy`` derives from CUDA devices, so the test wraps the module itself first (the strategy
then keeps the existing wrapping).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

import lightning.fabric.strategies.fsdp as fabric_fsdp  # noqa: E402
from lightning.fabric import Fabric  # noqa: E402
from lightning.fabric.strategies import FSDPStrategy  # noqa: E402
from tiny_transformer import Block, batches, loss_fn, make_model  # noqa: E402
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: E402
from torch.distributed.fsdp.wrap import ModuleWrapPolicy  # noqa: E402

from lightning_muon.optim.registry import OPTIMIZERS  # noqa: E402

TYPES = ("full", "sharded")


def _cpu_full_state_dict_context(
    module: torch.nn.Module, world_size: int, rank0_only: bool = True
) -> Any:
    """Lightning's full-state-dict context without ``offload_to_cpu``, which crashes FSDP1 when the
    parameters already live on the CPU (a segmentation fault in torch 2.13's state-dict hook)."""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp.api import FullOptimStateDictConfig

    return FSDP.state_dict_type(
        module, StateDictType.FULL_STATE_DICT,
        FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
        FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
    )  # fmt: skip


fabric_fsdp._get_full_state_dict_context = _cpu_full_state_dict_context


class CPUFSDPStrategy(FSDPStrategy):
    """The stock strategy, with FSDP's ``device_id`` set to the CPU (tests only)."""

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        module = FSDP(
            module,
            auto_wrap_policy=ModuleWrapPolicy({Block}),
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            use_orig_params=True,
        )
        return super().setup_module(module)


def untied() -> torch.nn.Module:
    """The tiny transformer with its own head (FSDP1's full state dict on the CPU crashes on tied weights)."""
    model = make_model()
    model.lm_head.weight = torch.nn.Parameter(model.wte.weight.detach().clone())
    return model


def setup(fabric: Fabric, name: str) -> tuple[Any, Any]:
    model = fabric.setup_module(untied())
    optimizer = fabric.setup_optimizers(OPTIMIZERS[name](model.parameters()))
    return model, optimizer


def train(fabric: Fabric, model: Any, optimizer: Any, data: list[torch.Tensor]) -> None:
    for tokens in data:
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss_fn(model, tokens))
        optimizer.step()


def weights(model: Any) -> dict[str, torch.Tensor]:
    with FSDP.summon_full_params(model._forward_module):
        return {
            n.replace("_forward_module.", "").replace(
                "_fsdp_wrapped_module.", ""
            ): p.detach().clone()
            for n, p in model.named_parameters()
        }


def main() -> None:
    out, ckpt, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    data = batches(5)
    results: dict[str, Any] = {}
    for kind in TYPES:
        fabric = Fabric(
            accelerator="cpu",
            strategy=CPUFSDPStrategy(state_dict_type=kind),
            devices=int(sys.argv[4]),
        )
        fabric.launch()
        for name in OPTIMIZERS:
            path = ckpt / f"{kind}-{name}"
            key = f"{kind}/{name}"
            if mode == "save":
                model, optimizer = setup(fabric, name)
                train(fabric, model, optimizer, data[:3])
                fabric.save(path, {"model": model, "optimizer": optimizer})
                train(fabric, model, optimizer, data[3:])
                expected = weights(model)
                if fabric.global_rank == 0:
                    torch.save(expected, ckpt / f"{kind}-{name}-after.pt")
                shapes = sorted(
                    {
                        tuple(v.shape)
                        for st in optimizer.optimizer.state.values()
                        for k, v in st.items()
                        if k.startswith("row_")
                    }
                )
            else:
                expected = torch.load(ckpt / f"{kind}-{name}-after.pt")
                shapes = []
            fabric.barrier()
            model, optimizer = setup(fabric, name)
            state = {"model": model, "optimizer": optimizer}
            fabric.load(path, state)
            train(fabric, model, optimizer, data[3:])
            got = weights(model)
            results[key] = {
                "resumed_identical": all(torch.equal(got[n], expected[n]) for n in expected),
                "max_rel_diff": max(
                    float(
                        (got[n] - expected[n]).abs().max()
                        / expected[n].abs().max().clamp_min(1e-30)
                    )
                    for n in expected
                ),
                "row_state_shapes": shapes,
                "moved": max(
                    float((got[n] - w).abs().max()) for n, w in untied().named_parameters()
                ),
            }
    (out / f"rank{fabric.global_rank}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
