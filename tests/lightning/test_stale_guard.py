"""The stale-parameter guard is exact: the stock LightningCLI under FSDP2 with only the hidden
layers sharded is refused on every rank (it used to finish with the hidden matrices unchanged)."""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import tomllib
import torch
from torch import nn

import lightning_muon
import lightning_muon as lm
import lightning_muon.lightning.live_guard
from lightning_muon.lightning import StaleParametersError

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "scripts" / "stock_cli_hidden_sharded.py"
PACKAGE_ROOT = Path(lightning_muon.__file__).resolve().parents[1]
GROUP = "lightning.pytorch.callbacks_factory"


def declared_callback_factories() -> dict[str, str]:
    """The package's Lightning callback entry points, as pyproject.toml declares them."""
    project = tomllib.loads((PACKAGE_ROOT / "pyproject.toml").read_text())["project"]
    return dict(project.get("entry-points", {}).get(GROUP, {}))


def entry_point_path(tmp: Path) -> str:
    """A sys.path entry that makes the declared entry points visible to Lightning.

    An installed package has them in its metadata; an editable install made before they were
    declared does not, so the test writes the same metadata next to the run (a no-op when the
    installed metadata has them already).
    """
    declared = declared_callback_factories()
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=GROUP)}
    if all(installed.get(k) == v for k, v in declared.items()):
        return ""
    info = tmp / "site" / "lightning_muon_entry_points-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: lightning-muon-entry-points\nVersion: 0\n"
    )
    config = configparser.ConfigParser()
    config[GROUP] = declared
    with (info / "entry_points.txt").open("w") as f:
        config.write(f)
    return str(info.parent)


def run_stock_cli(out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    extra = entry_point_path(out)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_ROOT), extra, env.get("PYTHONPATH", "")) if p
    )
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]


@pytest.mark.distributed
@pytest.mark.slow
def test_stock_cli_fsdp2_hidden_layers_sharded_is_refused_on_every_rank(tmp_path):
    ranks = run_stock_cli(tmp_path / "run")
    assert [r["rank"] for r in ranks] == [0, 1]
    for rank in ranks:
        assert rank["status"] == "refused", rank
        assert (
            "not parameters of HiddenSharded" in rank["message"]
            and "MuonLightningCLI" in rank["message"]
        )
        assert rank["changed"] == []  # refused before the first step: nothing was trained


class TwoLayers(pl.LightningModule):
    def __init__(self, replace: bool) -> None:
        super().__init__()
        self.replace = replace
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 2)

    def configure_model(self) -> None:
        if self.replace:  # what fully_shard does to the parameters it shards
            self.a.weight = nn.Parameter(self.a.weight.detach().clone())

    def training_step(self, batch, batch_idx):
        return self.b(torch.relu(self.a(batch[0]))).square().mean()

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(8, 8))
        return torch.utils.data.DataLoader(data, batch_size=4)


def fit_with_guard(module: pl.LightningModule, optimizer_of) -> pl.Trainer:
    module.configure_optimizers = lambda: optimizer_of(module)
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[lm.lightning.live_guard.LiveParametersGuard()],
    )  # fmt: skip
    trainer.fit(module)
    return trainer


def test_guard_refuses_one_stale_matrix_among_live_ones():
    """One replaced matrix among live parameters that do get gradients: still refused."""
    module = TwoLayers(replace=True)
    stale_weight = module.a.weight
    params = list(module.parameters())  # built before configure_model, as the stock CLI does
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    with pytest.raises(StaleParametersError, match="1 of 4 parameters"):
        fit_with_guard(module, lambda m: lm.Muon(params, lr=0.02))
    assert stale_weight is not module.a.weight
    after = dict(module.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_guard_lets_a_correct_optimizer_and_other_optimizers_train():
    for make in (lambda m: lm.Muon(m, lr=0.02), lambda m: torch.optim.AdamW(m.parameters())):
        module = TwoLayers(replace=True)
        before = module.b.weight.detach().clone()
        trainer = fit_with_guard(module, make)
        assert trainer.global_step == 2 and not torch.equal(before, module.b.weight)


def test_the_guard_is_declared_as_a_lightning_entry_point():
    declared = declared_callback_factories()
    assert declared == {"lightning_muon": "lightning_muon.lightning.live_guard:callbacks_factory"}
    [guard] = lm.lightning.live_guard.callbacks_factory()
    assert isinstance(guard, lm.lightning.live_guard.LiveParametersGuard)
