"""CUDA mixed precision through the Trainer (skipped without a GPU; the CPU suite covers the same
paths with bf16 autocast and an explicit fp16 GradScaler)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_muon.data import ByteCorpusDataModule
from lightning_muon.lightning.gpt import GPTLanguageModel
from tests.lightning.tiny_setup import TINY_DATA, TINY_MODEL, trainer_kwargs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_cuda_mixed_precision_trains_every_parameter(precision):
    pl.seed_everything(0)
    model = GPTLanguageModel(**TINY_MODEL, optimizer="normuon", lr=0.01)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = pl.Trainer(**trainer_kwargs(accelerator="cuda", precision=precision, max_steps=3))
    trainer.fit(model, ByteCorpusDataModule(**TINY_DATA))
    after = {n: p.detach().cpu() for n, p in model.named_parameters()}
    assert all(not torch.equal(before[n], after[n]) for n in before)
    states = [s for s in trainer.optimizers[0].state.values() if "momentum_buffer" in s]
    assert states and all(s["momentum_buffer"].dtype == torch.float32 for s in states)
    if precision == "16-mixed":
        assert trainer.precision_plugin.scaler is not None
