"""Tiny configurations shared by the Lightning-integration tests (all CPU, seconds each)."""

from __future__ import annotations

import torch

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
