"""Diagnostics through Lightning's logging: callbacks can monitor them, every logger gets them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lightning_muon.callbacks import SpectrumMonitor, UpdateNormMonitor

ROOT = Path(__file__).resolve().parents[2]
KEY = "update_norm/fc1.weight/row_cv"


def test_model_checkpoint_monitors_a_diagnostic(
    tiny_lm: Any, trainer_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """ModelCheckpoint(monitor=<diagnostic key>) keeps the step with the lowest recorded value."""
    monitor = UpdateNormMonitor(every_n_steps=2, params="fc1.weight")
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / "ckpt",
        monitor=KEY,
        mode="min",
        every_n_train_steps=2,
        save_top_k=1,
        filename="{step}",
    )
    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    trainer = pl.Trainer(max_steps=8, logger=False, callbacks=[monitor, ckpt], **kwargs)
    model = tiny_lm(optimizer="sgd", lr=0.5)
    trainer.fit(model)
    cvs = {r.step: r.stats.rows.cv for r in monitor.records}
    assert sorted(cvs) == [1, 3, 5, 7]
    best_step = min(cvs, key=cvs.get)
    assert ckpt.best_model_score.item() == pytest.approx(cvs[best_step], rel=1e-6)
    # checkpoints are named by steps completed: the step with index s is saved as step=s+1
    assert Path(ckpt.best_model_path).name == f"step={best_step + 1}.ckpt"
    assert trainer.callback_metrics[KEY].item() == pytest.approx(cvs[7], rel=1e-6)


def test_early_stopping_on_a_diagnostic(tiny_lm: Any, trainer_kwargs: dict[str, Any]) -> None:
    monitor = UpdateNormMonitor(every_n_steps=4, params="fc1.weight")
    stop = EarlyStopping(monitor=KEY, stopping_threshold=10.0, check_on_train_epoch_end=True)
    trainer = pl.Trainer(max_epochs=3, logger=False, callbacks=[monitor, stop], **trainer_kwargs)
    trainer.fit(tiny_lm())
    assert trainer.current_epoch == 1 and trainer.global_step == 32  # stopped after epoch 1
    last = monitor.records[-1]
    assert last.step == 31  # the epoch's last step, index 31
    assert f"{KEY} = {last.stats.rows.cv:.6f}"[:-2] in stop.stopping_reason_message


def test_logged_on_due_steps_only_also_off_the_logging_grid(
    tiny_lm: Any, trainer_kwargs: dict[str, Any]
) -> None:
    """Every measurement reaches the logger once, at its step; no stale repeats later."""
    logger = CSVLogger(trainer_kwargs["default_root_dir"])
    monitor = UpdateNormMonitor(every_n_steps=3, params="fc1.weight")
    kwargs = {**trainer_kwargs, "log_every_n_steps": 2}
    trainer = pl.Trainer(max_steps=8, logger=logger, callbacks=[monitor], **kwargs)
    trainer.fit(tiny_lm())
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        logged = {int(r["step"]): float(r[KEY]) for r in csv.DictReader(f) if r.get(KEY)}
    expected = {r.step: r.stats.rows.cv for r in monitor.records}
    assert sorted(expected) == [2, 5] and logged == pytest.approx(expected, rel=1e-6)


def test_one_step_index_in_records_logs_images_and_titles(
    tiny_lm: Any, trainer_kwargs: dict[str, Any]
) -> None:
    """Defaults: an image per measurement, at the step the scalars and the plot title use."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = trainer_kwargs["default_root_dir"]
    tb, csv_logger = TensorBoardLogger(root, name="tb"), CSVLogger(root, name="csv")
    spectra = SpectrumMonitor(every_n_steps=2, sources=["update"])
    trainer = pl.Trainer(
        max_steps=4, logger=[tb, csv_logger], callbacks=[spectra], **trainer_kwargs
    )
    trainer.fit(tiny_lm())
    tb.experiment.flush()
    events = EventAccumulator(tb.log_dir, size_guidance={"images": 0})
    events.Reload()
    image_steps = [e.step for e in events.Images("spectrum/singular_values")]
    scalar = "spectrum/update/fc1.weight/condition_number"
    scalar_steps = [e.step for e in events.Scalars(scalar)]
    loss_steps = {e.step for e in events.Scalars("loss")}
    with open(Path(csv_logger.log_dir) / "metrics.csv") as f:
        csv_steps = [int(r["step"]) for r in csv.DictReader(f) if r.get(scalar)]
    record_steps = sorted({r.step for r in spectra.records})
    assert image_steps == scalar_steps == csv_steps == record_steps == [1, 3]
    assert set(record_steps) <= loss_steps  # the same step as the batch's training loss
    assert "(step 3)" in spectra.plot().axes[0].get_title()


def test_quickstart_recipe_logs_spectrum_images() -> None:
    """The recipe's SpectrumMonitor draws at least one image within the recipe's run."""
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    trainer = recipe["trainer"]
    (spec,) = [c for c in trainer["callbacks"] if c["class_path"].endswith("SpectrumMonitor")]
    monitor = SpectrumMonitor(**spec.get("init_args", {}))
    assert monitor.log_images and monitor.image_every_n_steps <= trainer["max_steps"]


def _train_with(logger: Any, tiny_lm: Any, trainer_kwargs: dict[str, Any]) -> SpectrumMonitor:
    spectra = SpectrumMonitor(every_n_steps=2, params="fc1.weight", sources=["update"])
    norms = UpdateNormMonitor(every_n_steps=2, params="fc1.weight")
    trainer = pl.Trainer(max_steps=2, logger=logger, callbacks=[spectra, norms], **trainer_kwargs)
    trainer.fit(tiny_lm())
    return spectra


@pytest.mark.slow
def test_wandb_logger_gets_scalars_images_and_histograms(
    tiny_lm: Any, trainer_kwargs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ``WandbLogger``, offline (no network): its run folder holds what was logged."""
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="diag")
    try:
        spectra = _train_with(logger, tiny_lm, trainer_kwargs)
        summary = logger.experiment.summary._as_dict()  # offline: the run's last values
    finally:
        wandb.finish()
    (record,) = [r for r in spectra.records if r.param == "fc1.weight"]
    key = "spectrum/update/fc1.weight/condition_number"
    assert summary[key] == pytest.approx(record.stats.condition_number, rel=1e-6)
    assert summary[KEY] > 0 and summary["trainer/global_step"] == 1
    assert summary["spectrum/singular_values"]["_type"] == "images/separated"
    assert summary["update_norm/fc1.weight/row_norms"]["_type"] == "histogram"
    assert summary["spectrum/update/fc1.weight/singular_values"]["_type"] == "histogram"
    (image,) = tmp_path.rglob("offline-run-*/files/media/images/spectrum/singular_values_*.png")
    assert image.read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_mlflow_logger_gets_scalars_and_images(
    tiny_lm: Any, trainer_kwargs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ``MLFlowLogger`` on a local file store; MLflow has no histograms (one note)."""
    pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = MLFlowLogger(tracking_uri=f"file:{tmp_path / 'mlruns'}", experiment_name="diag")
    _train_with(logger, tiny_lm, trainer_kwargs)
    run = tmp_path / "mlruns" / logger.experiment_id / logger.run_id
    (image,) = (run / "artifacts").rglob("*.png")
    assert image.relative_to(run / "artifacts").as_posix() == (
        "spectrum/singular_values/step_000001.png"
    )
    assert image.read_bytes().startswith(b"\x89PNG")
    value = (run / "metrics" / KEY).read_text().split()
    assert float(value[1]) > 0 and value[2] == "1"  # timestamp, value, step


def test_adapter_skips_loggers_without_media_api(
    tiny_lm: Any, trainer_kwargs: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """CSV has no image or histogram API: scalars only, and one message, no error."""
    logger = CSVLogger(trainer_kwargs["default_root_dir"])
    spectra = _train_with(logger, tiny_lm, trainer_kwargs)
    assert ("noimage-CSVLogger", "") in spectra._noted
    assert ("nohistogram-CSVLogger", "") in spectra._noted


def test_two_monitors_of_one_type_share_a_checkpoint(
    tiny_lm: Any, trainer_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    from lightning_muon.diagnostics import load_histories

    def monitors() -> list[SpectrumMonitor]:
        return [
            SpectrumMonitor(every_n_steps=2, params="fc1.weight", sources=["update"]),
            SpectrumMonitor(every_n_steps=2, params="fc2.weight", sources=["update"]),
        ]

    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    ckpt = ModelCheckpoint(dirpath=tmp_path / "c", filename="last")
    first = monitors()
    pl.Trainer(max_steps=4, logger=False, callbacks=[*first, ckpt], **kwargs).fit(tiny_lm())
    assert first[0].state_key != first[1].state_key
    assert {r.param for r in first[0].records} == {"fc1.weight"}
    saved = load_histories(tmp_path / "c" / "last.ckpt")
    assert saved == {first[0].state_key: first[0].records, first[1].state_key: first[1].records}

    again = monitors()
    trainer = pl.Trainer(max_steps=6, logger=False, callbacks=again, **kwargs)
    trainer.fit(tiny_lm(), ckpt_path=tmp_path / "c" / "last.ckpt")
    for old, new in zip(first, again):
        assert new.records[: len(old.records)] == old.records
        assert sorted({r.step for r in new.records}) == [1, 3, 5]
        assert {r.param for r in new.records} == {r.param for r in old.records}


def test_same_type_same_watch_list_is_refused_by_lightning(
    tiny_lm: Any, trainer_kwargs: dict[str, Any]
) -> None:
    """Identical keys would overwrite each other's history: Lightning refuses the pair."""
    pair = [SpectrumMonitor(every_n_steps=2), SpectrumMonitor(every_n_steps=4)]
    with pytest.raises(RuntimeError, match="more than one stateful callback of type `Spectrum"):
        pl.Trainer(max_steps=1, logger=False, callbacks=pair, **trainer_kwargs).fit(tiny_lm())


def test_metric_values_are_the_same_on_the_logged_tensor(
    tiny_lm: Any, trainer_kwargs: dict[str, Any]
) -> None:
    """What reaches ``callback_metrics`` is the record's value (float32 tensor of it)."""
    monitor = UpdateNormMonitor(every_n_steps=1, params="fc1.weight")
    trainer = pl.Trainer(max_steps=1, logger=False, callbacks=[monitor], **trainer_kwargs)
    trainer.fit(tiny_lm())
    (rec,) = monitor.records
    for metric, value in rec.metrics().items():
        logged = trainer.callback_metrics[f"update_norm/fc1.weight/{metric}"]
        assert isinstance(logged, torch.Tensor)
        assert logged.item() == pytest.approx(value, rel=1e-6)
