"""Fabric: build_optimizer over the module, then fabric.setup / setup_optimizers, and train."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightning.fabric import Fabric
from litgpt import GPT

import lightning_muon as lm
from lightning_muon.data import ByteCorpusDataModule
from lightning_muon.lightning import build_optimizer
from lightning_muon.lightning.gpt import byte_gpt_config
from tests.lightning.tiny_setup import TINY_DATA, TINY_MODEL

HIDDEN = {
    "transformer.h.0.attn.qkv.weight",
    "transformer.h.0.attn.proj.weight",
    "transformer.h.0.mlp.fc_1.weight",
    "transformer.h.0.mlp.fc_2.weight",
    "transformer.h.0.mlp.proj.weight",
}


@pytest.mark.parametrize("order", ["setup_together", "module_then_optimizers"])
def test_fabric_trains_a_litgpt_model_with_a_routed_optimizer(order):
    fabric = Fabric(accelerator="cpu", devices=1, precision="bf16-mixed")
    fabric.seed_everything(0)
    model = GPT(byte_gpt_config(**TINY_MODEL))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    if order == "setup_together":
        optimizer = build_optimizer(model, "normuon", lr=0.01)
        model, optimizer = fabric.setup(model, optimizer)
    else:
        model = fabric.setup_module(model)
        optimizer = fabric.setup_optimizers(build_optimizer(model, "normuon", lr=0.01))
    routed = {
        g["branch"]: {n.removeprefix("_forward_module.") for n in g["param_names"]}
        for g in optimizer.param_groups
    }
    assert routed["muon"] == HIDDEN
    assert {"lm_head.weight", "transformer.wte.weight"} <= routed["adamw"]
    data = ByteCorpusDataModule(**TINY_DATA)
    data.setup("fit")
    loader = fabric.setup_dataloaders(data.train_dataloader(), use_distributed_sampler=False)
    for step, (x, y) in enumerate(loader):
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        if step == 2:
            break
    assert isinstance(optimizer.optimizer, lm.NorMuon)
    after = dict(model.named_parameters())
    for name, value in before.items():
        live = after.get(name, after.get(f"_forward_module.{name}"))
        assert not torch.equal(value, live.detach()), name
