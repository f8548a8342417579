"""Training runs the Lightning-integration tests start in fresh processes.

python tiny_run.py resume-reference OUT   # 2k steps straight, and k steps with a checkpoint
python tiny_run.py resume-continue OUT    # a new process: resume the checkpoint, k more steps
python tiny_run.py ddp OUT                # 2 CPU processes, gloo, via the Trainer
python tiny_run.py fsdp2 OUT              # 2 CPU processes, FSDP2, via MuonLightningCLI flags
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_muon.data import ByteCorpusDataModule
from lightning_muon.lightning.gpt import GPTLanguageModel
from tests.distributed.dist_launch import end_process_group

TINY_MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16}
# 950 training bytes in batches of 8 windows of 16: 7 batches per epoch, so runs cross epochs.
RESUME_DATA = {"block_size": 16, "batch_size": 8, "max_bytes": 1000}
K = 5  # optimizer steps before the checkpoint; the reference runs 2K
ACCUMULATE = 2


def trainer(**kwargs) -> pl.Trainer:
    defaults = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
    }
    return pl.Trainer(**{**defaults, **kwargs})


def resume_model() -> GPTLanguageModel:
    pl.seed_everything(0)
    return GPTLanguageModel(
        **TINY_MODEL,
        optimizer="normuon",
        lr=0.01,
        lr_schedule="cosine",
        warmup_steps=2,
        total_steps=2 * K,
    )


def save_weights(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    state = {
        name: {k: v.clone() for k, v in optimizer.state[p].items()}
        for name, p in model.named_parameters()
    }
    torch.save({"weights": weights, "state": state}, path)


def resume_reference(out: Path) -> None:
    model = resume_model()
    run = trainer(max_steps=2 * K, accumulate_grad_batches=ACCUMULATE, enable_checkpointing=False)
    run.fit(model, ByteCorpusDataModule(**RESUME_DATA))
    save_weights(model, run.optimizers[0], out / "straight.pt")
    model = resume_model()
    checkpoint = ModelCheckpoint(dirpath=out, filename="half", every_n_train_steps=K)
    run = trainer(max_steps=K, accumulate_grad_batches=ACCUMULATE, callbacks=[checkpoint])
    run.fit(model, ByteCorpusDataModule(**RESUME_DATA))


def resume_continue(out: Path) -> None:
    model = resume_model()
    run = trainer(max_steps=2 * K, accumulate_grad_batches=ACCUMULATE, enable_checkpointing=False)
    run.fit(model, ByteCorpusDataModule(**RESUME_DATA), ckpt_path=out / "half.ckpt")
    save_weights(model, run.optimizers[0], out / "resumed.pt")


def ddp(out: Path) -> None:
    pl.seed_everything(0)
    model = GPTLanguageModel(**TINY_MODEL, optimizer="muon", lr=0.02)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    run = trainer(max_steps=3, devices=2, strategy="ddp", enable_checkpointing=False)
    run.fit(model, ByteCorpusDataModule(block_size=16, batch_size=2, max_bytes=20_000))
    optimizer = run.optimizers[0]
    torch.save(
        {
            "before": before,
            "after": {name: p.detach().clone() for name, p in model.named_parameters()},
            "branches": {g["branch"]: list(g["param_names"]) for g in optimizer.param_groups},
            "backend": torch.distributed.get_backend(),
            "world_size": run.world_size,
            "data_rank": (
                run.train_dataloader.dataset.rank,
                run.train_dataloader.dataset.world_size,
            ),
        },
        out / f"ddp_rank{run.global_rank}.pt",
    )


class ShardedGPT(GPTLanguageModel):
    """The byte GPT with FSDP2 applied in configure_model (per block, then the whole model)."""

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for block in self.model.transformer.h:
            fully_shard(block, mesh=mesh)
        fully_shard(self.model, mesh=mesh)


class TensorParallelGPT(GPTLanguageModel):
    """The byte GPT with litgpt's TP plan and FSDP2 on the strategy's 2-D mesh."""

    def configure_model(self) -> None:
        from lightning_muon.litgpt.tensor_parallel import parallelize

        parallelize(self.model, self.device_mesh)


def fsdp2(out: Path) -> None:
    sharded_cli_run(out, "fsdp2", ShardedGPT, dp=2, tp=1)


def tensor_parallel(out: Path) -> None:
    sharded_cli_run(out, "tp", TensorParallelGPT, dp=2, tp=2)


def sharded_cli_run(out: Path, tag: str, model_class: type, dp: int, tp: int) -> None:
    """``MuonLightningCLI`` with ``--optimizer NorMuon`` and ``ModelParallelStrategy(dp, tp)``."""
    import lightning_muon.distributed as lmd
    from lightning_muon.cli import MuonLightningCLI

    args = [f"--model.{k}={v}" for k, v in TINY_MODEL.items()]
    args += ["--data.block_size=16", "--data.batch_size=2", "--data.max_bytes=20000"]
    args += [
        "--seed_everything=0",
        "--trainer.accelerator=cpu",
        f"--trainer.devices={dp * tp}",
        "--trainer.strategy=ModelParallelStrategy",
        f"--trainer.strategy.data_parallel_size={dp}",
        f"--trainer.strategy.tensor_parallel_size={tp}",
        "--trainer.max_steps=2",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.limit_val_batches=1",  # sanity validation leaves FSDP2 roots unsharded
        "--optimizer=NorMuon",
        "--optimizer.lr=0.02",
    ]
    cli = MuonLightningCLI(
        model_class, ByteCorpusDataModule, args=args, run=False, save_config_callback=None
    )
    before = {name: p.detach().clone() for name, p in cli.model.named_parameters()}
    cli.trainer.fit(cli.model, cli.datamodule)
    optimizer = cli.trainer.optimizers[0]
    live = {id(p) for p in cli.model.parameters()}
    torch.save(
        {
            "before": before,
            "after": {n: p.full_tensor().clone() for n, p in cli.model.named_parameters()},
            "branches": {g["branch"]: list(g["param_names"]) for g in optimizer.param_groups},
            "holds_live": all(id(p) in live for g in optimizer.param_groups for p in g["params"]),
            "sharded": all(type(p.data).__name__ == "DTensor" for p in cli.model.parameters()),
            "block_layouts": len(getattr(lmd.engine_of(optimizer).blocks, "layouts", ())),
        },
        out / f"{tag}_rank{cli.trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, out = sys.argv[1], Path(sys.argv[2])
    {
        "resume-reference": resume_reference,
        "resume-continue": resume_continue,
        "ddp": ddp,
        "fsdp2": fsdp2,
        "tp": tensor_parallel,
    }[mode](out)
    end_process_group()
