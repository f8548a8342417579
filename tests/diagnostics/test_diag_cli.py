"""The monitors from the command line: ``LightningCLI --trainer.callbacks+=...``."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch.cli import LightningCLI

from lightning_muon.callbacks import SpectrumMonitor, UpdateNormMonitor


def test_lightning_cli_callbacks_append(
    tiny_lm: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["lightning-cli"])
    args = [
        "fit",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=2",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=lightning_muon.callbacks.UpdateNormMonitor",
        "--trainer.callbacks.every_n_steps=1",
        "--trainer.callbacks.params=[fc1.weight]",
        "--trainer.callbacks+=lightning_muon.callbacks.SpectrumMonitor",
        "--trainer.callbacks.every_n_steps=2",
        "--trainer.callbacks.sources=[update, momentum]",
    ]
    cli = LightningCLI(tiny_lm, args=args, save_config_kwargs={"overwrite": True})
    updates = [c for c in cli.trainer.callbacks if isinstance(c, UpdateNormMonitor)]
    spectra = [c for c in cli.trainer.callbacks if isinstance(c, SpectrumMonitor)]
    assert len(updates) == len(spectra) == 1
    assert updates[0].params == ["fc1.weight"] and spectra[0].sources == ("update", "momentum")
    assert {(r.step, r.param) for r in updates[0].records} == {(0, "fc1.weight"), (1, "fc1.weight")}
    assert {(r.step, r.source) for r in spectra[0].records} == {(1, "update"), (1, "momentum")}
    saved = next(tmp_path.rglob("config.yaml")).read_text()
    assert "lightning_muon.callbacks.UpdateNormMonitor" in saved


def test_lightning_muon_command_with_monitors(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The product's own command: the monitors' keys land in its metrics.csv."""
    pytest.importorskip("litgpt")
    import csv

    from lightning_muon.cli import main

    monkeypatch.setattr(sys, "argv", ["lightning-muon"])
    main(
        [
            "fit",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.log_every_n_steps=1",
            "--model.n_layer=1",
            "--model.n_head=2",
            "--model.n_embd=32",
            "--model.block_size=32",
            "--model.optimizer=muon",
            "--data.batch_size=4",
            "--data.max_bytes=100000",
            "--trainer.callbacks+=lightning_muon.callbacks.UpdateNormMonitor",
            "--trainer.callbacks.every_n_steps=2",
            "--trainer.callbacks+=lightning_muon.callbacks.SpectrumMonitor",
            "--trainer.callbacks.every_n_steps=2",
            "--trainer.callbacks.sources=[direction]",
        ]
    )
    (path,) = tmp_path.rglob("metrics.csv")
    with open(path) as f:
        columns = set(next(csv.reader(f)))
    param = "model.transformer.h.0.mlp.fc_2.weight"
    assert f"update_norm/{param}/row_cv" in columns
    assert f"spectrum/direction/{param}/orthogonality_error" in columns


ROOT = Path(__file__).resolve().parents[2]
SHORT_RUN = [
    "--trainer.max_steps=2",
    "--trainer.val_check_interval=1",
    "--trainer.limit_val_batches=0",
    "--trainer.enable_progress_bar=false",
    "--model.n_layer=1",
    "--data.max_bytes=100000",
]
RECIPE_SHORT_RUN = ["--model.warmup_steps=1"]  # the recipe warms up for longer than the run


def _commands(markdown: str) -> list[list[str]]:
    """The ``lightning-muon fit`` commands of a page's bash blocks, as argument lists."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        line = block.replace("\\\n", " ")
        for command in line.splitlines():
            if command.startswith("lightning-muon fit") and "SpectrumMonitor" in command:
                commands.append(shlex.split(command))
    return commands


@pytest.mark.slow
def test_documented_monitor_commands_run_as_written(tmp_path: Path) -> None:
    """The how-to's and the notebook's commands (plus a short-run budget) watch what they say."""
    pytest.importorskip("litgpt")
    howto = _commands((ROOT / "docs" / "how-to" / "diagnostics.md").read_text("utf-8"))
    notebook = json.loads((ROOT / "docs" / "notebooks" / "diagnostics.ipynb").read_text("utf-8"))
    cells = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
    (from_notebook,) = _commands(cells)
    assert len(howto) == 2 and from_notebook in howto  # the notebook's command is tested here
    for i, command in enumerate(howto):
        assert command[:2] == ["lightning-muon", "fit"]
        root = tmp_path / f"run{i}"
        args = [*command[1:], f"--trainer.default_root_dir={root}", *SHORT_RUN]
        if "--config" in command:
            args += RECIPE_SHORT_RUN
        proc = subprocess.run(
            [sys.executable, "-m", "lightning_muon.cli", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        every = 50 if "--config" in command else 100
        assert (
            f"SpectrumMonitor: every {every} steps, watching 1 parameter(s): "
            "model.transformer.h.0.mlp.fc_2.weight"
        ) in out, out[-3000:]
