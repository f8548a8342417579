"""``Trainer(strategy=FSDPStrategy(...))`` (FSDP1) with the quick-start GPT and NorMuon on 2 CPU ranks.

Usage: ``python job_fsdp1_lightning.py OUT STATE_DICT_TYPE`` (Lightning starts the second rank).
Three fits: 6 steps straight; 4 steps and ``trainer.save_checkpoint``; a new Trainer resuming that
checkpoint to step 6. Rank 0 writes ``OUT/rank0.json`` with the routing, the losses and whether the
resumed weights equal the straight run's bit for bit.

The only change to the stock strategy: FSDP1 on the CPU needs ``device_id=cpu``, which
``FSDPStrategy`` derives from CUDA devices, so the test wraps the module itself first (the
strategy keeps an existing wrapping), and full state dicts skip ``offload_to_cpu`` (it crashes
torch when the parameters already live on the CPU).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import lightning.fabric.strategies.fsdp as fabric_fsdp
import lightning.pytorch.strategies.fsdp as pl_fsdp
import torch
from dist_launch import end_process_group
from job_fsdp1_fabric import _cpu_full_state_dict_context
from lightning.pytorch.strategies import FSDPStrategy
from litgpt.model import Block
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from lightning_muon.data import ByteCorpusDataModule
from lightning_muon.lightning.gpt import GPTLanguageModel

fabric_fsdp._get_full_state_dict_context = pl_fsdp._get_full_state_dict_context = (
    _cpu_full_state_dict_context
)


class CPUFSDPStrategy(FSDPStrategy):
    """The stock strategy, with FSDP's ``device_id`` set to the CPU (tests only)."""

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = FSDP(
            model, auto_wrap_policy=ModuleWrapPolicy({Block}), sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"), use_orig_params=True,
        )  # fmt: skip
        return super()._setup_model(model)


class Recorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.routing: dict[str, str] = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, *args: Any
    ) -> None:
        self.losses.append(float(outputs["loss"]))
        if not self.routing:
            self.routing = {e.name: e.branch for e in trainer.optimizers[0].routing.entries}


def fit(
    kind: str, steps: int, ckpt: str | None = None, save: Path | None = None
) -> tuple[L.Trainer, Recorder]:
    L.seed_everything(0)
    model = GPTLanguageModel(
        n_layer=2, n_head=2, n_embd=32, block_size=32, optimizer="normuon", lr=0.01
    )
    data = ByteCorpusDataModule(block_size=32, batch_size=4, max_bytes=100_000)
    recorder = Recorder()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy=CPUFSDPStrategy(state_dict_type=kind), max_steps=steps,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[recorder],
    )  # fmt: skip
    trainer.fit(model, datamodule=data, ckpt_path=ckpt)
    if save is not None:
        trainer.save_checkpoint(save)
    return trainer, recorder


def weights(trainer: L.Trainer) -> dict[str, torch.Tensor]:
    with FSDP.summon_full_params(trainer.strategy.model):
        return {n: p.detach().clone() for n, p in trainer.strategy.model.named_parameters()}


def main() -> None:
    out, kind = Path(sys.argv[1]), sys.argv[2]
    straight, recorder = fit(kind, 6)
    expected = weights(straight)
    path = out / f"ckpt-{kind}"
    fit(kind, 4, save=path)
    resumed, _ = fit(kind, 6, ckpt=str(path))
    got = weights(resumed)
    if straight.global_rank == 0:
        result = {
            "routing": recorder.routing,
            "losses": recorder.losses,
            "resumed_identical": all(torch.equal(got[n], expected[n]) for n in expected),
        }
        (out / "rank0.json").write_text(json.dumps(result, indent=1))
    end_process_group()


if __name__ == "__main__":
    main()
