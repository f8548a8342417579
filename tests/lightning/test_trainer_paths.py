"""Trainer fits through the mixin and through hand-written configure_optimizers, and what every
Lightning user relies on: accumulation, clipping, mixed precision, LearningRateMonitor, the guard."""

from __future__ import annotations

import csv
import inspect
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins import MixedPrecision
from torch import nn

import lightning_muon as lm
from lightning_muon.data import ByteCorpusDataModule
from lightning_muon.lightning import (
    OptimizerConfigError,
    StaleParametersError,
    check_live_parameters,
)
from lightning_muon.lightning.gpt import GPTLanguageModel
from tests.lightning.tiny_setup import (
    ADAMW_NAMES,
    HAND_WRITTEN_BRANCHES,
    MUON_NAMES,
    TINY_DATA,
    TINY_MODEL,
    HandWritten,
    branches,
    trainer_kwargs,
)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())}


def fit(model, **overrides) -> pl.Trainer:
    trainer = pl.Trainer(**trainer_kwargs(**overrides))
    trainer.fit(model, ByteCorpusDataModule(**TINY_DATA))
    return trainer


def test_mixin_path_builds_the_named_optimizer_routes_and_trains():
    pl.seed_everything(0)
    model = GPTLanguageModel(**TINY_MODEL, optimizer="normuon", lr=0.01, weight_decay=0.1)
    before = snapshot(model)
    trainer = fit(model)
    optimizer = trainer.optimizers[0]
    assert type(optimizer) is lm.NorMuon
    assert branches(optimizer) == {"muon": MUON_NAMES, "adamw": ADAMW_NAMES}
    assert {g["lr"] for g in optimizer.param_groups} == {0.01}
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.1}
    assert changed(before, model) == MUON_NAMES | ADAMW_NAMES
    assert math.isfinite(trainer.callback_metrics["train_loss"].item())


def test_mixin_passes_only_given_settings_so_defaults_never_leak():
    """lr=None means the chosen class's own default (and, for AdamW, the baseline's settings), not
    another optimizer's."""
    for name, cls, weight_decay in (("adamw", torch.optim.AdamW, 0.1), ("adamuon", lm.AdaMuon, None)):
        model = GPTLanguageModel(**TINY_MODEL, optimizer=name)
        optimizer = model.configure_optimizers()["optimizer"]
        defaults = inspect.signature(cls).parameters
        assert optimizer.param_groups[0]["lr"] == defaults["lr"].default
        expected = defaults["weight_decay"].default if weight_decay is None else weight_decay
        assert optimizer.param_groups[0]["weight_decay"] == expected
    model = GPTLanguageModel(
        **TINY_MODEL, optimizer="muon", optimizer_kwargs={"momentum": 0.8, "ns_steps": 3}
    )
    group = model.configure_optimizers()["optimizer"].param_groups[0]
    assert (group["momentum"], group["ns_steps"]) == (0.8, 3)


def test_mixin_rejects_bad_settings_when_the_model_is_built():
    with pytest.raises(OptimizerConfigError, match="Unknown optimizer 'nomuon'.*normuon"):
        GPTLanguageModel(**TINY_MODEL, optimizer="nomuon")
    with pytest.raises(OptimizerConfigError, match="'betas'"):
        GPTLanguageModel(**TINY_MODEL, optimizer="muon", optimizer_kwargs={"betas": (0.9, 0.9)})
    with pytest.raises(OptimizerConfigError, match="lr is given twice"):
        GPTLanguageModel(**TINY_MODEL, lr=0.1, optimizer_kwargs={"lr": 0.2})
    with pytest.raises(OptimizerConfigError, match="warmup_steps=10 needs an lr_schedule"):
        GPTLanguageModel(**TINY_MODEL, warmup_steps=10)


@pytest.mark.parametrize("use_param_groups", [False, True])
def test_hand_written_configure_optimizers(use_param_groups):
    pl.seed_everything(0)
    model = HandWritten(use_param_groups)
    before = snapshot(model)
    trainer = fit(model)
    assert branches(trainer.optimizers[0]) == HAND_WRITTEN_BRANCHES
    assert changed(before, model) == set(before)


class GradientProbe(Callback):
    def __init__(self):
        self.batches = 0
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.batches += 1
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if grads:
            self.norms.append(
                torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()
            )


def test_gradient_accumulation_steps_once_per_window_and_matches_manual_accumulation():
    pl.seed_everything(0)
    model = GPTLanguageModel(**TINY_MODEL, optimizer="normuon", lr=0.01)
    reference = GPTLanguageModel(**TINY_MODEL, optimizer="normuon", lr=0.01)
    reference.load_state_dict(model.state_dict())
    probe = GradientProbe()
    trainer = fit(model, max_steps=2, accumulate_grad_batches=3, callbacks=[probe])
    optimizer = trainer.optimizers[0]
    assert probe.batches == 6 and trainer.global_step == 2
    assert {int(s["step"]) for s in optimizer.state.values() if "step" in s} == {2}
    # Oracle: the same six batches, loss / 3 accumulated, one step per window.
    data = ByteCorpusDataModule(**TINY_DATA)
    data.setup("fit")
    manual = reference.configure_optimizers()["optimizer"]
    batches = iter(data.train_dataloader())
    for _ in range(2):
        for _ in range(3):
            (reference._loss(next(batches)) / 3).backward()
        manual.step()
        manual.zero_grad()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_gradient_clipping_is_applied_before_the_muon_step():
    pl.seed_everything(0)
    unclipped, clipped = GradientProbe(), GradientProbe()
    fit(GPTLanguageModel(**TINY_MODEL, optimizer="muon"), callbacks=[unclipped])
    pl.seed_everything(0)
    fit(
        GPTLanguageModel(**TINY_MODEL, optimizer="muon"),
        callbacks=[clipped],
        gradient_clip_val=0.05,
        gradient_clip_algorithm="norm",
    )
    assert min(unclipped.norms) > 0.1
    assert max(clipped.norms) <= 0.05 * (1 + 1e-4)


def test_bf16_mixed_precision_trains_with_fp32_state():
    pl.seed_everything(0)
    model = GPTLanguageModel(**TINY_MODEL, optimizer="adamuon")
    before = snapshot(model)
    trainer = fit(model, precision="bf16-mixed")
    optimizer = trainer.optimizers[0]
    assert changed(before, model) == set(before)
    buffers = [s["momentum_buffer"] for s in optimizer.state.values() if "momentum_buffer" in s]
    assert buffers and all(b.dtype == torch.float32 for b in buffers)


@pytest.mark.parametrize("init_scale, expect_skips", [(2.0**8, False), (2.0**60, True)])
def test_fp16_amp_scaler_with_the_closure_step(init_scale, expect_skips):
    """16-mixed with a GradScaler: the closure runs inside step(), unscaling happens before the
    update, and an overflowing scale skips the step without touching weights."""
    pl.seed_everything(0)
    model = GPTLanguageModel(**TINY_MODEL, optimizer="normuon")
    before = snapshot(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    fit(model, plugins=[MixedPrecision("16-mixed", "cpu", scaler)], max_steps=3)
    if expect_skips:
        assert changed(before, model) == set()
        assert scaler.get_scale() < init_scale
    else:
        assert changed(before, model) == set(before)
        assert scaler.get_scale() == init_scale


def test_learning_rate_monitor_logs_the_muon_and_adamw_groups(tmp_path: Path):
    pl.seed_everything(0)
    model = GPTLanguageModel(
        **TINY_MODEL, optimizer="normuon", lr=0.04, lr_schedule="linear", warmup_steps=2
    )
    logger = CSVLogger(tmp_path)
    fit(
        model,
        max_steps=4,
        logger=logger,
        log_every_n_steps=1,
        callbacks=[LearningRateMonitor(logging_interval="step")],
    )
    with open(Path(logger.log_dir) / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("lr-NorMuon/muon")]
    muon = [float(r["lr-NorMuon/muon"]) for r in rows]
    adamw = [float(r["lr-NorMuon/adamw"]) for r in rows]
    # warmup (k+1)/2 then linear decay to 0 at step 4: 0.02, 0.04, 0.04·(1-0/2), 0.04·(1-1/2)
    assert muon == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adamw == muon


class ReplacesParameters(GPTLanguageModel):
    """configure_model swaps every parameter for a new object, as FSDP2's fully_shard does."""

    def configure_model(self) -> None:
        for module in self.modules():
            for name, p in list(module.named_parameters(recurse=False)):
                setattr(module, name, nn.Parameter(p.detach().clone()))


def test_mixin_builds_after_configure_model_so_replaced_parameters_train():
    pl.seed_everything(0)
    model = ReplacesParameters(**TINY_MODEL, optimizer="muon")
    before = snapshot(model)  # values survive the swap; an optimizer on the old objects would
    trainer = fit(model)  # leave every live value unchanged
    check_live_parameters(trainer.optimizers[0], model)
    assert changed(before, model) == set(before)


def test_guard_refuses_stale_and_unnamed_parameters():
    model = GPTLanguageModel(**TINY_MODEL, optimizer="muon")
    stale = lm.Muon(model)
    ReplacesParameters.configure_model(model)
    with pytest.raises(
        StaleParametersError, match="not parameters of GPTLanguageModel.*MuonLightningCLI"
    ):
        check_live_parameters(stale, model)
    with pytest.warns(UserWarning, match="plain tensors"):
        unnamed = lm.Muon(model.parameters())
    with pytest.raises(StaleParametersError, match="without parameter names"):
        check_live_parameters(unnamed, model)
    check_live_parameters(lm.Muon(model), model)
