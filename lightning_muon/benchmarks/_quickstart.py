"""The quick-start setup shared by the diagnostics benchmarks: model, data and a Trainer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl


def quickstart_model(
    optimizer: str, n_layer: int = 4, n_embd: int = 128, **kwargs: Any
) -> pl.LightningModule:
    """``GPTLanguageModel`` in its quick-start configuration (``lr=None``: the optimizer's default)."""
    from lightning_muon.lightning.gpt import GPTLanguageModel

    n_head = max(1, n_embd // 32)
    return GPTLanguageModel(
        n_layer=n_layer, n_head=n_head, n_embd=n_embd, optimizer=optimizer, **kwargs
    )


def quickstart_data(
    block_size: int = 128, batch_size: int = 16, max_bytes: int = 4_000_000
) -> pl.LightningDataModule:
    """The stdlib byte corpus, read once (``setup`` is idempotent, so one instance serves many runs)."""
    from lightning_muon.data import ByteCorpusDataModule

    data = ByteCorpusDataModule(block_size=block_size, batch_size=batch_size, max_bytes=max_bytes)
    data.setup("fit")
    return data


def quiet_trainer(
    max_steps: int, callbacks: Sequence[pl.Callback], accelerator: str = "cpu", **kwargs: Any
) -> pl.Trainer:
    """A one-device Trainer without logger, checkpoints, progress bar or validation."""
    return pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
        **kwargs,
    )
