"""Tiny configurations shared by the Lightning-integration tests (all CPU, seconds each)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

import lightning_muon as lm

TINY_MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16}
TINY_DATA = {"block_size": 16, "batch_size": 2, "max_bytes": 20_000, "max_val_windows": 4}

# The litgpt GPT's hidden matrices (the orthogonal branch) and everything else (AdamW), by name.
MUON_NAMES = {
    "model.transformer.h.0.attn.qkv.weight",
    "model.transformer.h.0.attn.proj.weight",
    "model.transformer.h.0.mlp.fc_1.weight",
    "model.transformer.h.0.mlp.fc_2.weight",
    "model.transformer.h.0.mlp.proj.weight",
}
ADAMW_NAMES = {
    "model.lm_head.weight",
    "model.transformer.wte.weight",
    "model.transformer.h.0.norm_1.weight",
    "model.transformer.h.0.norm_2.weight",
    "model.transformer.ln_f.weight",
}


def branches(optimizer: torch.optim.Optimizer) -> dict[str, set[str]]:
    """``{"muon": names, "adamw": names}`` read from the optimizer's param groups."""
    out: dict[str, set[str]] = {"muon": set(), "adamw": set()}
    for group in optimizer.param_groups:
        out[group["branch"]].update(group["param_names"])
    return out


def trainer_kwargs(**overrides):
    kwargs = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 2,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
    }
    kwargs.update(overrides)
    return kwargs


class HandWritten(pl.LightningModule):
    """The third path: a user's own configure_optimizers over routed groups. Its configure_model
    swaps every parameter for a new object, as FSDP2's fully_shard does, so an optimizer built
    before it would train nothing."""

    def __init__(self, use_param_groups: bool = False) -> None:
        super().__init__()
        self.use_param_groups = use_param_groups
        self.embed = nn.Embedding(256, 16)
        self.hidden = nn.Linear(16, 16)
        self.head = nn.Linear(16, 256)

    def configure_model(self) -> None:
        for module in (self.embed, self.hidden, self.head):
            for name, p in list(module.named_parameters(recurse=False)):
                setattr(module, name, nn.Parameter(p.detach().clone()))

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.head(torch.relu(self.hidden(self.embed(x))))
        return F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))

    def configure_optimizers(self):
        if self.use_param_groups:
            return lm.Muon(lm.param_groups(self), lr=0.02)
        return lm.build_optimizer(self, "muon_vs", lr=0.02)


HAND_WRITTEN_BRANCHES = {
    "muon": {"hidden.weight"},
    "adamw": {"embed.weight", "hidden.bias", "head.weight", "head.bias"},
}
