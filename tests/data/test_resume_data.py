"""When a mid-epoch resume sees exactly the batches of a straight run: with the built-in data
module (a stateful loader, any number of workers) yes; with a plain DataLoader no (Lightning
restarts the interrupted epoch). The optimizer-state side is tested in a new process in
tests/lightning/test_processes.py."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader

from lightning_muon.data import ByteCorpusDataModule
from lightning_muon.data.windows import FixedWindows

STEPS = 6  # batches per epoch below: 7, so the checkpoint at 3 steps is mid-epoch


class Recorder(pl.LightningModule):
    """A bigram model that records the first token of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, 256)
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append(x[:, 0].tolist())
        logits = self.embed(x)
        return nn.functional.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(root, steps, callbacks=()) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=root,
        callbacks=list(callbacks),
        enable_checkpointing=bool(callbacks),
    )


def straight_and_resumed(tmp_path, make_data):
    straight = Recorder()
    trainer(tmp_path / "a", STEPS).fit(straight, make_data())
    first = Recorder()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=STEPS // 2)
    trainer(tmp_path / "b", STEPS // 2, [checkpoint]).fit(first, make_data())
    resumed = Recorder()
    path = tmp_path / "ckpt" / f"epoch=0-step={STEPS // 2}.ckpt"
    trainer(tmp_path / "c", STEPS).fit(resumed, make_data(), ckpt_path=path)
    return straight.seen, first.seen + resumed.seen


@pytest.mark.parametrize("num_workers", [0, 2])
def test_builtin_data_resumes_mid_epoch_with_the_same_batches(tmp_path, num_workers):
    def make_data():
        return ByteCorpusDataModule(
            block_size=16, batch_size=8, max_bytes=1000, num_workers=num_workers
        )

    straight, resumed = straight_and_resumed(tmp_path, make_data)
    assert len(straight) == STEPS and resumed == straight


def test_a_plain_dataloader_restarts_the_interrupted_epoch(tmp_path):
    """The documented limit: without loader state Lightning replays the epoch from its start."""
    tokens = ByteCorpusDataModule(block_size=16, batch_size=8, max_bytes=1000)
    tokens.setup("fit")

    def make_data():
        windows = FixedWindows(tokens.train_tokens, block_size=16)
        return DataLoader(windows, batch_size=8)

    straight, resumed = straight_and_resumed(tmp_path, make_data)
    half = STEPS // 2
    assert resumed[:half] == straight[:half]
    assert resumed[half:] == straight[:half]  # the epoch started over
    assert resumed != straight
