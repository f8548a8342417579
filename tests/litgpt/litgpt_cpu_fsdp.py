"""Run the stock ``litgpt`` CLI on CPU ranks with FSDP1 (test harness, one process per rank).

Usage: ``RANK=r WORLD_SIZE=W LOCAL_RANK=r MASTER_ADDR=… MASTER_PORT=… python litgpt_cpu_fsdp.py OUT pretrain --config … --devices W``.

``litgpt pretrain --devices N`` builds Fabric's ``FSDPStrategy`` (FSDP1, ``HYBRID_SHARD``), which
Fabric accepts only on CUDA devices. Three CPU-only substitutions, nothing else:

* the strategy class litgpt instantiates is a subclass that wraps with ``device_id=cpu`` and, for
  ``HYBRID_SHARD``, a 1 × W CPU device mesh (FSDP's own node detection counts CUDA devices);
* full state dicts are taken without ``offload_to_cpu`` (on CPU parameters it crashes torch);
* ``TORCHDYNAMO_DISABLE=1`` (set by the test) turns litgpt's ``torch.compile`` into a no-op.

Rank 0 writes ``OUT/rank0.json`` with the optimizer's class and its routing table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning.fabric.strategies.fsdp as fabric_fsdp
import litgpt.pretrain
import torch
from lightning.fabric.strategies import FSDPStrategy
from litgpt.__main__ import main
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP


def _full_state_dict_context(
    module: torch.nn.Module, world_size: int, rank0_only: bool = True
) -> Any:
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp.api import FullOptimStateDictConfig

    return FSDP.state_dict_type(
        module, StateDictType.FULL_STATE_DICT,
        FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
        FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
    )  # fmt: skip


class CPUFSDPStrategy(FSDPStrategy):
    """Fabric's ``FSDPStrategy`` with FSDP's device set to the CPU."""

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        if not any(isinstance(m, FSDP) for m in module.modules()):
            kwargs = dict(self._fsdp_kwargs)
            if "HYBRID" in self.sharding_strategy.name and "device_mesh" not in kwargs:
                from torch.distributed.device_mesh import init_device_mesh

                kwargs["device_mesh"] = init_device_mesh("cpu", (1, self.world_size))
            module = FSDP(
                module, cpu_offload=self.cpu_offload, mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"), **kwargs,
            )  # fmt: skip
        return super().setup_module(module)

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        if self.global_rank == 0:
            routing = getattr(optimizer, "routing", None)
            record = {"optimizer": type(optimizer).__name__, "world": self.world_size}
            if routing is not None:
                record["routing"] = {e.name: e.branch for e in routing.entries}
                record["shapes"] = {e.name: list(e.shape) for e in routing.entries}
            (OUT / "rank0.json").write_text(json.dumps(record, indent=1))
        return super().setup_optimizer(optimizer)


OUT = Path(sys.argv[1])
fabric_fsdp._get_full_state_dict_context = _full_state_dict_context
litgpt.pretrain.FSDPStrategy = CPUFSDPStrategy
sys.argv = ["litgpt", *sys.argv[2:]]
main()
