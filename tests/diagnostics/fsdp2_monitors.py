"""Run by ``test_diag_fsdp2.py`` under ``torch.distributed.run`` with 2 CPU processes (gloo).

Trains a tiny model sharded with FSDP2 (``ModelParallelStrategy``, ``fully_shard``: parameters
become ``Shard(0)`` DTensors, uneven 13 + 12 rows for ``fc1``) with NorMuon and both monitors
attached, and an oracle callback that gathers the full weights after every step. Rank 0 writes what both saw
to the JSON file named by the first argument.
"""

from __future__ import annotations

import json
import sys

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp import fully_shard

from lightning_muon import NorMuon
from lightning_muon.callbacks import SpectrumMonitor, UpdateNormMonitor
from lightning_muon.diagnostics import full_tensor, gathered_row_norms, row_norms
from lightning_muon.diagnostics.distributed import DTensor


class Sharded(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 25, bias=False)
        self.fc2 = nn.Linear(25, 16, bias=False)

    def configure_model(self) -> None:
        mesh = self.device_mesh["data_parallel"]
        fully_shard(self.fc1, mesh=mesh)
        fully_shard(self.fc2, mesh=mesh)
        fully_shard(self, mesh=mesh)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return (self.fc2(torch.tanh(self.fc1(batch))) - batch).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return NorMuon(self, lr=1e-2)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        x = torch.randn(64, 16, generator=torch.Generator().manual_seed(self.global_rank))
        return torch.utils.data.DataLoader(x, batch_size=8)


class FullWeights(pl.Callback):
    """Oracle: full (gathered) weights after every step, on every rank."""

    def __init__(self) -> None:
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def _grab(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.after[trainer.global_step] = {
            n: full_tensor(p.detach()).double() for n, p in module.named_parameters()
        }

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._grab(trainer, module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, *args: object
    ) -> None:
        self._grab(trainer, module)


def main(out: str) -> None:
    torch.set_num_threads(1)
    oracle = FullWeights()
    # fc2 is this toy model's output layer (AdamW branch), which the default selection leaves out
    updates = UpdateNormMonitor(every_n_steps=2, params="fc*")
    spectra = SpectrumMonitor(every_n_steps=2, params="fc*")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[oracle, updates, spectra],
    )
    model = Sharded()
    trainer.fit(model)

    # row statistics come from the local shards: gathering row norms never gathers the matrix
    weight = model.fc1.weight
    full = weight.full_tensor()
    original = DTensor.full_tensor
    DTensor.full_tensor = lambda self: (_ for _ in ()).throw(AssertionError("gathered a matrix"))
    try:
        local_rows = gathered_row_norms(weight)
    finally:
        DTensor.full_tensor = original
    if trainer.is_global_zero:
        placements = {n: str(p.placements) for n, p in model.named_parameters()}
        result = {
            "placements": placements,
            "local_rows": weight.to_local().shape[0],
            "gathered_rows_error": (local_rows - row_norms(full)).abs().max().item(),
            "updates": [
                {
                    "step": r.step,
                    "param": r.param,
                    "rows": r.row_norms.tolist(),
                    "oracle": row_norms(
                        oracle.after[r.step + 1][r.param] - oracle.after[r.step][r.param]
                    ).tolist(),
                    "rms": r.stats.rms,
                    "ratio": r.stats.update_to_weight,
                    "oracle_ratio": (
                        (oracle.after[r.step + 1][r.param] - oracle.after[r.step][r.param]).norm()
                        / oracle.after[r.step][r.param].norm()
                    ).item(),
                }
                for r in updates.records
            ],
            "spectra": [
                {
                    "step": r.step,
                    "param": r.param,
                    "source": r.source,
                    "sv": r.singular_values.tolist(),
                    "orthogonality_error": r.stats.orthogonality_error,
                    "oracle": (
                        torch.linalg.svdvals(
                            oracle.after[r.step + 1][r.param] - oracle.after[r.step][r.param]
                        ).tolist()
                        if r.source == "update"
                        else torch.linalg.svdvals(oracle.after[r.step + 1][r.param]).tolist()
                        if r.source == "weight"
                        else None
                    ),
                }
                for r in spectra.records
            ],
        }
        with open(out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
