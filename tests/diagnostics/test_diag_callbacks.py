"""The monitors through a real Trainer: exact logged keys, values against weight snapshots."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lightning_muon.callbacks import SpectrumMonitor, UpdateNormMonitor
from lightning_muon.diagnostics import row_norms

UPDATE_METRICS = ["row_mean", "row_std", "row_cv", "row_min_max_ratio", "rms", "update_to_weight"]
SPECTRUM_METRICS = ["sigma_min", "condition_number", "stable_rank", "effective_rank"]


class WeightTrail(pl.Callback):
    """Oracle: a float64 copy of every parameter after each optimizer step."""

    def __init__(self) -> None:
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def _grab(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.after[trainer.global_step] = {
            n: p.detach().double().clone() for n, p in pl_module.named_parameters()
        }

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._grab(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        self._grab(trainer, pl_module)


def _csv_rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_exact_csv_keys_and_values(tiny_lm: Any, trainer_kwargs: dict[str, Any]) -> None:
    updates = UpdateNormMonitor(every_n_steps=2)
    spectra = SpectrumMonitor(every_n_steps=2, top_k=2)
    logger = CSVLogger(trainer_kwargs["default_root_dir"])
    trainer = pl.Trainer(max_steps=5, logger=logger, callbacks=[updates, spectra], **trainer_kwargs)
    trainer.fit(tiny_lm())

    params = ["fc1.weight", "fc2.weight"]  # embedding and output head are not watched by default
    expected = {f"update_norm/{p}/{m}" for p in params for m in UPDATE_METRICS}
    for source in ("update", "momentum", "weight"):  # AdamW exposes no orthogonalized direction
        for p in params:
            expected |= {
                f"spectrum/{source}/{p}/{m}" for m in [*SPECTRUM_METRICS, "sigma_1", "sigma_2"]
            }
    rows = _csv_rows(logger)
    columns = set(rows[0])
    assert {c for c in columns if c.startswith(("update_norm/", "spectrum/"))} == expected
    assert columns - expected == {"epoch", "step", "loss"}

    # the 2nd and 4th steps (indices 1 and 3): records and logs use Lightning's step index
    assert sorted({r.step for r in updates.records}) == [1, 3]
    key = "update_norm/fc1.weight/row_cv"
    logged = {int(r["step"]): float(r[key]) for r in rows if r[key]}
    rec = {r.step: r for r in updates.records if r.param == "fc1.weight"}
    assert logged == pytest.approx({1: rec[1].stats.rows.cv, 3: rec[3].stats.rows.cv}, rel=1e-6)
    loss_steps = {int(r["step"]) for r in rows if r["loss"]}
    assert set(logged) <= loss_steps


def test_update_statistics_match_weight_snapshots(
    tiny_lm: Any, trainer_kwargs: dict[str, Any]
) -> None:
    """ΔW is the applied update, also with gradient accumulation (hooks fire per window)."""
    trail, updates = WeightTrail(), UpdateNormMonitor(every_n_steps=2)
    spectra = SpectrumMonitor(every_n_steps=2, sources=["update", "momentum"])
    trainer = pl.Trainer(
        max_steps=4,
        accumulate_grad_batches=2,
        logger=False,
        callbacks=[trail, updates, spectra],
        **trainer_kwargs,
    )
    model = tiny_lm()
    trainer.fit(model)
    assert sorted({r.step for r in updates.records}) == [1, 3]
    for rec in updates.records:
        delta = trail.after[rec.step + 1][rec.param] - trail.after[rec.step][rec.param]
        before = trail.after[rec.step][rec.param]
        ref = row_norms(delta)
        torch.testing.assert_close(rec.row_norms.double(), ref, rtol=1e-4, atol=1e-9)
        assert rec.stats.rows.cv == pytest.approx(
            (ref.std(correction=0) / ref.mean()).item(), rel=1e-4
        )
        assert rec.stats.rms == pytest.approx(delta.pow(2).mean().sqrt().item(), rel=1e-4)
        assert rec.stats.update_to_weight == pytest.approx(
            (delta.norm() / before.norm()).item(), rel=1e-4
        )
    for rec in spectra.records:
        if rec.source == "update":
            delta = trail.after[rec.step + 1][rec.param] - trail.after[rec.step][rec.param]
            ref = torch.linalg.svdvals(delta)
            torch.testing.assert_close(rec.singular_values.double(), ref, rtol=1e-3, atol=1e-8)
    # the last due step is the last step: its momentum is the optimizer's exp_avg now
    opt = trainer.optimizers[0]
    last = [r for r in spectra.records if r.step == 3 and r.source == "momentum"]
    assert {r.param for r in last} == {"fc1.weight", "fc2.weight"}
    for rec in last:
        ref = torch.linalg.svdvals(
            opt.state[dict(model.named_parameters())[rec.param]]["exp_avg"].double()
        )
        torch.testing.assert_close(rec.singular_values.double(), ref, rtol=1e-4, atol=1e-9)


class CapturingSGD(torch.optim.SGD):
    """SGD that exposes the direction-capture protocol; the direction is G / ‖G‖_F."""

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, lr=lr)
        self.capture_calls: list[list[int]] = []
        self._capture: set[int] = set()
        self.captured_directions: dict[torch.Tensor, torch.Tensor] = {}

    def capture_directions(self, params: Any) -> None:
        self.capture_calls.append([id(p) for p in params])
        self._capture = {id(p) for p in params}
        self.captured_directions = {}

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and id(p) in self._capture:
                    self.captured_directions[p] = (p.grad / p.grad.norm()).float().clone()
        super().step()
        return loss


def test_direction_capture_only_on_due_steps(tiny_lm: Any, trainer_kwargs: dict[str, Any]) -> None:
    model = tiny_lm()
    model.optimizer_factory = lambda m: CapturingSGD(m.parameters(), lr=0.1)
    spectra = SpectrumMonitor(every_n_steps=3, sources=["direction"])
    trainer = pl.Trainer(max_steps=6, logger=False, callbacks=[spectra], **trainer_kwargs)
    trainer.fit(model)
    opt = trainer.optimizers[0]
    watched = {id(model.fc1.weight), id(model.fc2.weight)}
    # one request per due step (the 3rd and 6th), each followed by a stop request
    assert [set(c) for c in opt.capture_calls] == [watched, set(), watched, set()]
    recs = [r for r in spectra.records if r.source == "direction"]
    assert sorted({r.step for r in recs}) == [2, 5]
    for rec in recs:
        assert rec.stats.sigma_max <= 1 + 1e-6  # a unit-Frobenius direction
        assert "orthogonality_error" in rec.metrics()


def test_normuon_direction_is_orthogonalized(tiny_lm: Any, trainer_kwargs: dict[str, Any]) -> None:
    spectra = SpectrumMonitor(every_n_steps=2)
    updates = UpdateNormMonitor(every_n_steps=2)
    trainer = pl.Trainer(max_steps=2, logger=False, callbacks=[spectra, updates], **trainer_kwargs)
    trainer.fit(tiny_lm(optimizer="normuon"))
    sources = {(r.param, r.source) for r in spectra.records}
    assert sources == {
        (p, s)
        for p in ("fc1.weight", "fc2.weight")
        for s in ("update", "momentum", "direction", "weight")
    }
    for rec in spectra.records:
        if (
            rec.source == "direction"
        ):  # Newton–Schulz (Jordan quintic) band, not the momentum's spread
            assert rec.stats.sigma_min > 0.6 and rec.stats.sigma_max < 1.25
            assert rec.stats.orthogonality_error < 0.35
    assert not trainer.optimizers[0].captured_directions


def test_tensorboard_histograms_and_images(tiny_lm: Any, trainer_kwargs: dict[str, Any]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(trainer_kwargs["default_root_dir"], name="tb")
    callbacks = [
        UpdateNormMonitor(every_n_steps=1),
        SpectrumMonitor(every_n_steps=1, image_every_n_steps=2, sources=["update"]),
    ]
    trainer = pl.Trainer(max_steps=2, logger=logger, callbacks=callbacks, **trainer_kwargs)
    trainer.fit(tiny_lm())
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    tags = events.Tags()
    assert {
        "update_norm/fc1.weight/row_norms",
        "spectrum/update/fc2.weight/singular_values",
    } <= set(tags["histograms"])
    assert tags["images"] == ["spectrum/singular_values"]
    assert len(events.Images("spectrum/singular_values")) == 1  # step 2 only
    assert "spectrum/update/fc1.weight/condition_number" in tags["scalars"]


def test_no_logger_keeps_history_and_plots(tiny_lm: Any, trainer_kwargs: dict[str, Any]) -> None:
    updates, spectra = UpdateNormMonitor(every_n_steps=1), SpectrumMonitor(every_n_steps=1)
    trainer = pl.Trainer(max_steps=2, logger=False, callbacks=[updates, spectra], **trainer_kwargs)
    trainer.fit(tiny_lm(optimizer="muon"))
    rows = updates.history_rows() + spectra.history_rows()
    assert {r["source"] for r in rows} == {"update", "momentum", "direction", "weight"}
    assert all(set(r) == {"step", "param", "source", "metric", "value"} for r in rows)
    assert all(math.isfinite(r["value"]) for r in rows)
    assert len(updates.plot().axes) == 2
    assert len(updates.plot(kind="history").axes) == 1
    assert len(spectra.plot().axes) == 2
    assert len(spectra.plot(kind="history").axes) == 4
