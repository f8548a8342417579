"""The stock LightningCLI with --optimizer, ModelParallelStrategy on 2 CPU processes, and a plain
LightningModule whose configure_model shards only its hidden layers (FSDP2).

python stock_cli_hidden_sharded.py OUT   # Lightning starts the second rank itself

The CLI builds the optimizer from ``model.parameters()`` before ``configure_model`` replaced the
hidden layers' parameters, so the optimizer holds the embedding and head (live) and the old hidden
matrices (stale). Each rank writes ``OUT/rank{r}.json``: whether fit finished or was refused, and
which parameters changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LightningCLI
from torch import nn

from lightning_muon.data import ByteCorpusDataModule
from lightning_muon.lightning import StaleParametersError


class HiddenSharded(pl.LightningModule):
    """Byte-level MLP language model; only the hidden layers are sharded."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, width)
        self.hidden = nn.Sequential(
            nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width)
        )
        self.head = nn.Linear(width, 256)

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        fully_shard(self.hidden[0], mesh=mesh)
        fully_shard(self.hidden[2], mesh=mesh)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.head(self.hidden(self.embed(x)))
        return F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))


def full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def main(out: Path) -> None:
    args = [
        "--seed_everything=0",
        "--data.block_size=16",
        "--data.batch_size=2",
        "--data.max_bytes=20000",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ModelParallelStrategy",
        "--trainer.strategy.data_parallel_size=2",
        "--trainer.strategy.tensor_parallel_size=1",
        "--trainer.max_steps=3",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--optimizer=lightning_muon.Muon",
        "--optimizer.lr=0.02",
    ]
    cli = LightningCLI(
        HiddenSharded, ByteCorpusDataModule, args=args, run=False, save_config_callback=None
    )
    before = {name: full(p) for name, p in cli.model.named_parameters()}
    try:
        cli.trainer.fit(cli.model, cli.datamodule)
        status, message = "finished", ""
    except StaleParametersError as error:
        status, message = "refused", str(error)
    after = {name: full(p) for name, p in cli.model.named_parameters()}
    changed = sorted(n for n in before if not torch.equal(before[n], after[n]))
    record = {
        "rank": cli.trainer.global_rank,
        "status": status,
        "message": message,
        "changed": changed,
        "parameters": sorted(before),
        "callbacks": [type(c).__name__ for c in cli.trainer.callbacks],
    }
    (out / f"rank{cli.trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
