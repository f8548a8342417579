"""A tiny LightningModule for the diagnostics tests (fixtures, so no test-module imports)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

VOCAB = 32


class TinyLM(pl.LightningModule):
    """Embedding → two hidden linears → output head, next-token loss on a fixed random sequence.

    Args:
        optimizer: ``"adamw"``, ``"sgd"``, ``"normuon"`` or ``"muon"``.
        lr: learning rate.
        unused_layer: add a linear layer that the forward pass never touches (no gradient).
    """

    def __init__(self, optimizer: str = "adamw", lr: float = 1e-2, unused_layer: bool = False):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.fc1 = nn.Linear(16, 24)
        self.fc2 = nn.Linear(24, 16)
        self.head = nn.Linear(16, VOCAB)
        self.unused = nn.Linear(16, 16) if unused_layer else None
        self.optimizer_name = optimizer
        self.lr = lr
        self.optimizer_factory: Callable[[pl.LightningModule], Any] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        return self.head(self.fc2(torch.relu(self.fc1(h))))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x).flatten(0, 1), y.flatten())
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is not None:
            return self.optimizer_factory(self)
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=self.lr)
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        import lightning_muon as lm

        return lm.get_optimizer_class(self.optimizer_name)(self, lr=self.lr)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, VOCAB, (256, 8), generator=g)
        data = torch.utils.data.TensorDataset(x, (x * 3 + 1) % VOCAB)
        return torch.utils.data.DataLoader(data, batch_size=8)


@pytest.fixture
def tiny_lm() -> type[TinyLM]:
    return TinyLM


@pytest.fixture
def trainer_kwargs(tmp_path: Any) -> dict[str, Any]:
    return {
        "default_root_dir": str(tmp_path),
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "log_every_n_steps": 1,
    }
