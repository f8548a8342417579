"""Lightning's BaseFinetuning unfreezes a backbone mid-training and calls
``optimizer.add_param_group({"params": [...], "lr": ...})``: with a Muon-family optimizer the
group is routed and checked as the constructor would, and training goes on as it does with AdamW."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn

import lightning_muon as lm

from .tiny_setup import trainer_kwargs


class Classifier(pl.LightningModule):
    def __init__(self, optimizer: str) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.backbone = nn.Sequential(
            nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.LayerNorm(16)
        )
        self.hidden = nn.Linear(16, 16)
        self.classifier = nn.Linear(16, 3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.classifier(torch.relu(self.hidden(self.backbone(x)))), y)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, 12, generator=g)
        data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())
        return torch.utils.data.DataLoader(data, batch_size=8)

    def configure_optimizers(self):
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if self.optimizer == "adamw":
            return torch.optim.AdamW([p for _, p in trainable], lr=1e-3)
        return lm.OPTIMIZERS[self.optimizer](trainable, lr=1e-3)


class UnfreezeBackbone(BaseFinetuning):
    def __init__(self, at_epoch: int = 1) -> None:
        super().__init__()
        self.at_epoch = at_epoch

    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.backbone)

    def finetune_function(self, pl_module, current_epoch, optimizer):
        if current_epoch == self.at_epoch:
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, initial_denom_lr=10.0)


@pytest.mark.parametrize("optimizer", ["adamw", "muon", "normuon"])
def test_base_finetuning_adds_the_unfrozen_backbone_mid_training(optimizer):
    torch.manual_seed(0)
    module = Classifier(optimizer)
    frozen = {n: p.detach().clone() for n, p in module.backbone.named_parameters()}
    trainer = pl.Trainer(
        **trainer_kwargs(max_steps=-1, max_epochs=3, callbacks=[UnfreezeBackbone()])
    )
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", UserWarning
        )  # plain tensors: routed by shape, as documented
        trainer.fit(module)
    assert trainer.current_epoch == 3 and trainer.global_step == 12
    opt = trainer.optimizers[0]
    added = [
        p
        for g in opt.param_groups
        for p in g["params"]
        if any(p is q for q in module.backbone.parameters())
    ]
    assert len(added) == 6  # every backbone parameter joined the optimizer once
    for name, p in module.backbone.named_parameters():
        assert not torch.equal(frozen[name], p), name  # and trained after the unfreeze
    if optimizer != "adamw":
        groups = opt.param_groups[-2:]
        assert [g["branch"] for g in groups] == ["muon", "adamw"]
        assert [tuple(p.shape) for p in groups[0]["params"]] == [(24, 12), (16, 24)]
        assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-4])  # lr / initial_denom_lr
