"""A finished run's history, back from its checkpoint or run folder in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_muon.callbacks import SpectrumMonitor, UpdateNormMonitor
from lightning_muon.diagnostics import (
    SpectrumRecord,
    UpdateNormRecord,
    find_checkpoint,
    load_histories,
    load_history,
    plot_row_norms,
    plot_spectra,
)


def _fit(tiny_lm: Any, root: Path, trainer_kwargs: dict[str, Any]) -> list[Any]:
    monitors = [UpdateNormMonitor(every_n_steps=2), SpectrumMonitor(every_n_steps=2)]
    kwargs = {**trainer_kwargs, "default_root_dir": str(root), "enable_checkpointing": True}
    trainer = pl.Trainer(
        max_steps=4,
        logger=CSVLogger(root),
        callbacks=[*monitors, ModelCheckpoint(save_last=True)],
        **kwargs,
    )
    trainer.fit(tiny_lm())
    return monitors


def test_load_history_from_a_run_folder_and_a_checkpoint(
    tiny_lm: Any, trainer_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    norms, spectra = _fit(tiny_lm, tmp_path / "run", trainer_kwargs)
    ckpt = find_checkpoint(tmp_path / "run")
    assert ckpt.name == "last.ckpt" and ckpt.parent.name == "checkpoints"
    records = load_history(tmp_path / "run")
    assert records == norms.records + spectra.records
    assert load_history(ckpt) == records
    assert load_history(ckpt, monitor="SpectrumMonitor") == spectra.records
    assert list(load_histories(ckpt)) == [norms.state_key, spectra.state_key]
    assert {type(r) for r in records} == {UpdateNormRecord, SpectrumRecord}
    assert len(plot_row_norms(records).axes) == 2 and len(plot_spectra(records).axes) == 2


def test_load_history_errors_name_what_is_there(
    tiny_lm: Any, trainer_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint or run folder"):
        load_history(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.ckpt file below"):
        load_history(tmp_path / "empty")
    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    ckpt = ModelCheckpoint(dirpath=tmp_path / "plain", filename="plain")
    pl.Trainer(max_steps=1, logger=False, callbacks=[ckpt], **kwargs).fit(tiny_lm())
    with pytest.raises(
        ValueError, match=r"holds no UpdateNormMonitor/SpectrumMonitor .*ModelCheckpoint"
    ):
        load_history(tmp_path / "plain" / "plain.ckpt")
    _fit(tiny_lm, tmp_path / "run", trainer_kwargs)
    with pytest.raises(
        ValueError, match=r"no monitor matching 'Nothing'; saved monitors: \[\"UpdateNormMonitor"
    ):
        load_history(tmp_path / "run", monitor="Nothing")


def test_checkpoint_of_version_0_1_is_restored_with_its_steps_shifted(
    tiny_lm: Any, trainer_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """0.1 saved under the class name and counted steps completed: both are understood."""
    import torch

    norms, _ = _fit(tiny_lm, tmp_path / "run", trainer_kwargs)
    path = find_checkpoint(tmp_path / "run")
    ckpt = torch.load(path, weights_only=True)
    state = ckpt["callbacks"].pop(norms.state_key)
    old = {
        **state,
        "version": 1,
        "records": [{**r, "step": r["step"] + 1} for r in state["records"]],
    }
    ckpt["callbacks"] = {"UpdateNormMonitor": old}
    torch.save(ckpt, tmp_path / "old.ckpt")
    assert load_history(tmp_path / "old.ckpt") == norms.records

    again = UpdateNormMonitor(every_n_steps=2)
    trainer = pl.Trainer(max_steps=6, logger=False, callbacks=[again], **trainer_kwargs)
    trainer.fit(tiny_lm(), ckpt_path=tmp_path / "old.ckpt")
    assert again.records[: len(norms.records)] == norms.records
    assert sorted({r.step for r in again.records}) == [1, 3, 5]
