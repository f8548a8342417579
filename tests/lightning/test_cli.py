"""Real LightningCLI invocations: --optimizer/--lr_scheduler flags (MuonLightningCLI and the stock
CLI), the mixin's --model.* settings, --print_config, bad input, and the quick-start recipe."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from torch import nn

import lightning_muon as lm
from lightning_muon.cli import (
    TOP_LEVEL_HELP,
    LightningMuonJob,
    MuonLightningCLI,
    check_strategy,
    main,
    resolve_optimizer_flags,
)
from lightning_muon.data import ByteCorpusDataModule
from lightning_muon.lightning import OptimizerConfigError, StaleParametersError, WarmupCosineLR
from lightning_muon.lightning.gpt import GPTLanguageModel
from tests.lightning.tiny_setup import (
    ADAMW_NAMES,
    HAND_WRITTEN_BRANCHES,
    MUON_NAMES,
    TINY_DATA,
    TINY_MODEL,
    HandWritten,
    branches,
)

ROOT = Path(__file__).resolve().parents[2]


class ReplacesParameters(GPTLanguageModel):
    """configure_model swaps every parameter for a new object, as FSDP2's fully_shard does."""

    def configure_model(self) -> None:
        for module in self.modules():
            for name, p in list(module.named_parameters(recurse=False)):
                setattr(module, name, nn.Parameter(p.detach().clone()))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No pytest flags in sys.argv; configs and logs land in a temporary directory."""
    monkeypatch.setattr(sys, "argv", ["lightning-muon"])
    monkeypatch.chdir(tmp_path)


def tiny_args(
    *extra: str,
    steps: int = 2,
    subcommand: str | None = "fit",
    gpt: bool = True,
    job: bool = False,
) -> list[str]:
    """Flags of a tiny run; ``job=True``: for the ``lightning-muon`` command, where
    ``data.block_size`` follows ``model.block_size`` and cannot be given."""
    args = ([subcommand] if subcommand else []) + ["--seed_everything", "0"]
    if gpt:
        args += [f"--model.{k}={v}" for k, v in TINY_MODEL.items()]
    args += [f"--data.{k}={v}" for k, v in TINY_DATA.items() if not (job and k == "block_size")]
    args += [
        f"--trainer.max_steps={steps}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
    ]
    return args + list(extra)


class Recorder:
    """Wraps a CLI class so the test can read the model's weights before fit starts."""

    @staticmethod
    def run(cli_class, model_class, *extra: str, steps: int = 2):
        cli = cli_class(
            model_class,
            ByteCorpusDataModule,
            args=tiny_args(
                *extra, steps=steps, subcommand=None, gpt=issubclass(model_class, GPTLanguageModel)
            ),
            run=False,
            save_config_callback=None,
        )
        before = {n: p.detach().clone() for n, p in cli.model.named_parameters()}
        cli.trainer.fit(cli.model, cli.datamodule)
        after = dict(cli.model.named_parameters())
        changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
        return cli, changed


def test_optimizer_and_scheduler_flags_build_at_fit_time_from_live_named_parameters():
    cli, changed = Recorder.run(
        MuonLightningCLI,
        ReplacesParameters,
        "--optimizer=NorMuon",
        "--optimizer.lr=0.02",
        "--optimizer.momentum=0.9",
        "--lr_scheduler=WarmupCosineLR",
        "--lr_scheduler.warmup_steps=1",
        "--lr_scheduler.min_lr_ratio=0.1",
        steps=3,
    )
    optimizer = cli.trainer.optimizers[0]
    assert type(optimizer) is lm.NorMuon
    assert branches(optimizer) == {"muon": MUON_NAMES, "adamw": ADAMW_NAMES}
    assert {g["momentum"] for g in optimizer.param_groups if g["branch"] == "muon"} == {0.9}
    assert changed == MUON_NAMES | ADAMW_NAMES  # the live (replaced) parameters trained
    config = cli.trainer.lr_scheduler_configs[0]
    assert isinstance(config.scheduler, WarmupCosineLR) and config.interval == "step"
    assert config.scheduler.total_steps == 3  # filled in from the Trainer
    # stepped once per optimizer step: after 3 of 3 steps the cosine has reached min_lr_ratio
    assert config.scheduler.last_epoch == 3
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * 0.1)


def test_full_class_path_and_a_torch_optimizer_work_too():
    cli, changed = Recorder.run(
        MuonLightningCLI, ReplacesParameters, "--optimizer=lightning_muon.MuonVS"
    )
    assert type(cli.trainer.optimizers[0]) is lm.MuonVS and changed == MUON_NAMES | ADAMW_NAMES
    cli, changed = Recorder.run(
        MuonLightningCLI, ReplacesParameters, "--optimizer=AdamW", "--optimizer.lr=0.01"
    )
    assert type(cli.trainer.optimizers[0]) is torch.optim.AdamW
    assert changed == MUON_NAMES | ADAMW_NAMES


def test_stock_lightning_cli_with_a_muon_optimizer_fails_loudly_before_training():
    cli = LightningCLI(
        ReplacesParameters,
        ByteCorpusDataModule,
        args=tiny_args("--optimizer=lightning_muon.NorMuon", subcommand=None),
        run=False,
        save_config_callback=None,
    )
    before = {n: p.detach().clone() for n, p in cli.model.named_parameters()}
    with pytest.raises(StaleParametersError, match="MuonLightningCLI"):
        cli.trainer.fit(cli.model, cli.datamodule)
    assert all(torch.equal(before[n], p) for n, p in cli.model.named_parameters())


@pytest.mark.parametrize(
    "cli_class, use_param_groups", [(LightningCLI, True), (MuonLightningCLI, False)]
)
def test_hand_written_configure_optimizers_through_the_cli(cli_class, use_param_groups):
    """No --optimizer: the module's own configure_optimizers runs at fit time, after
    configure_model, with either CLI."""
    cli, changed = Recorder.run(
        cli_class, HandWritten, f"--model.use_param_groups={use_param_groups}"
    )
    optimizer = cli.trainer.optimizers[0]
    assert type(optimizer) is (lm.Muon if use_param_groups else lm.MuonVS)
    assert branches(optimizer) == HAND_WRITTEN_BRANCHES
    assert changed == HAND_WRITTEN_BRANCHES["muon"] | HAND_WRITTEN_BRANCHES["adamw"]


def test_mixin_settings_on_the_command_line():
    cli, changed = Recorder.run(
        MuonLightningCLI,
        GPTLanguageModel,
        "--model.optimizer=muon_nsr",
        "--model.lr=0.01",
        "--model.lr_schedule=wsd",
        "--model.optimizer_kwargs={alpha: 10.0}",
    )
    optimizer = cli.trainer.optimizers[0]
    assert type(optimizer) is lm.MuonNSR
    assert branches(optimizer) == {"muon": MUON_NAMES, "adamw": ADAMW_NAMES}
    assert {g["alpha"] for g in optimizer.param_groups if g["branch"] == "muon"} == {10.0}
    assert optimizer.param_groups[0]["initial_lr"] == 0.01
    assert changed == MUON_NAMES | ADAMW_NAMES


def test_print_config_round_trips(tmp_path, capsys):
    flags = ["--optimizer=NorMuon", "--optimizer.lr=0.03", "--lr_scheduler=WarmupStableDecayLR"]
    with pytest.raises(SystemExit):
        MuonLightningCLI(
            GPTLanguageModel, ByteCorpusDataModule, args=tiny_args(*flags, "--print_config")
        )
    first = capsys.readouterr().out
    assert "class_path: lightning_muon.NorMuon" in first and "lr: 0.03" in first
    assert "fit_time_optimizer" not in first  # hidden link targets stay out of the config
    path = tmp_path / "config.yaml"
    path.write_text(first)
    with pytest.raises(SystemExit):
        MuonLightningCLI(
            GPTLanguageModel,
            ByteCorpusDataModule,
            args=["fit", "--config", str(path), "--print_config"],
        )
    assert capsys.readouterr().out == first


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--optimizer=NoSuchOptimizer"],
            "--optimizer NoSuchOptimizer: Unknown optimizer 'NoSuchOptimizer'. Valid names: adamuon, adamw",
        ),
        (["--optimizer=NorMuon", "--optimizer.bogus=1"], "Key 'bogus' is not expected"),
        (["--model.optimizer=nomuon"], "Unknown optimizer 'nomuon'. Valid names: adamuon, adamw"),
        (["--optimizer=NorMuon", "--optimizer.lr=-1"], "lr"),
        (["--optimizer=NorMuon", "--model.lr=0.1"], "conflicts with --model.lr=0.1"),
        (["--lr_scheduler=WarmupCosineLR", "--model.lr_schedule=cosine"], "give one schedule"),
        (["--data.data_dir=/no/such/corpus"], "data_dir='/no/such/corpus' does not exist"),
        (
            ["--data.val_fraction=1.5"],
            "ByteCorpusDataModule: val_fraction must lie in (0, 1), got 1.5.",
        ),
        (["--data.block_size=64"], 'Linked "data.block_size" must be given via "model.block_size"'),
        (["--model.lr_schedule=cosine", "--model.warmup_steps=2.5"], "warmup_steps"),
    ],
)
def test_bad_input_stops_with_one_clear_line(flags, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(tiny_args(*flags, job=True))
    assert info.value.code == 2
    err = [
        line for line in capsys.readouterr().err.splitlines() if "error" in line or "Valid" in line
    ]
    assert err and err[0].startswith("lightning-muon: error: "), err
    assert message in "\n".join(err)
    assert len(err) <= 2 and all(len(line) < 400 for line in err), err  # no usage screen
    assert "Traceback" not in "\n".join(err)


def test_optimizer_flag_takes_the_same_names_as_the_model_setting():
    for name, cls in (("normuon", lm.NorMuon), ("Muon", lm.Muon), ("adamw", torch.optim.AdamW)):
        cli = MuonLightningCLI(
            GPTLanguageModel,
            ByteCorpusDataModule,
            args=tiny_args(f"--optimizer={name}", subcommand=None),
            run=False,
            save_config_callback=None,
        )
        spec = cli.config["fit_time_optimizer"]
        spec = spec.as_dict() if hasattr(spec, "as_dict") else dict(spec)
        optimizer = cli.build_fit_time_optimizer(cli.model, spec)
        assert type(optimizer) is cls, name
    # torch's Muon stays torch's when named by path
    assert resolve_optimizer_flags(["--optimizer", "torch.optim.Muon"])[1] == "torch.optim.Muon"


def test_fsdp1_settings_without_matrices_are_refused_for_the_muon_family_only():
    check_strategy(lm.NorMuon, FSDPStrategy())  # use_orig_params=True: exact on the flat shards
    with pytest.raises(OptimizerConfigError, match="use_orig_params=True"):
        check_strategy(lm.NorMuon, FSDPStrategy(use_orig_params=False))
    with pytest.raises(OptimizerConfigError, match="cpu_offload=False"):
        check_strategy(lm.NorMuon, FSDPStrategy(cpu_offload=True))
    check_strategy(torch.optim.AdamW, FSDPStrategy(use_orig_params=False))
    check_strategy(lm.NorMuon, DDPStrategy())


QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")


def quickstart_args(root: Path, steps: int, *extra: str) -> list[str]:
    """The quick-start recipe as written (20 warmup steps included), on a tiny budget."""
    return [
        "fit",
        "--config",
        QUICKSTART,
        f"--trainer.max_steps={steps}",
        "--trainer.val_check_interval=2",
        "--trainer.limit_val_batches=2",
        "--trainer.log_every_n_steps=1",
        f"--trainer.default_root_dir={root}",
        "--model.n_layer=1",
        "--data.max_bytes=200000",
        "--data.batch_size=2",
        *extra,
    ]


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_quickstart_recipe_runs_the_main_job(tmp_path, capsys):
    """`lightning-muon fit --config recipes/quickstart.yaml` with a tiny step budget: the
    recipe's 20 warmup steps are clamped to half the run, the metrics include bits per byte, and
    the run ends with a summary that says where everything is."""
    main(quickstart_args(tmp_path, 4))
    run = tmp_path / "lightning_logs" / "version_0"
    rows = read_metrics(run)
    assert any(r["train_loss"] for r in rows) and any(r["train_bpb"] for r in rows)
    lrs = [float(r["lr-NorMuon/muon"]) for r in rows if r.get("lr-NorMuon/muon")]
    assert lrs[:2] == pytest.approx([0.02 * 1 / 2, 0.02])  # warmup clamped to 4 // 2 = 2 steps
    val = [r for r in rows if r["val_loss"]]
    assert val and all(
        float(r["val_bpb"]) == pytest.approx(float(r["val_loss"]) / math.log(2), rel=1e-5)
        and float(r["val_ppl"]) == pytest.approx(math.exp(float(r["val_loss"])), rel=1e-5)
        for r in val
    )
    assert list(run.glob("events.out.tfevents.*"))
    config = (run / "config.yaml").read_text()
    assert "optimizer: normuon" in config
    assert "UpdateNormMonitor" in config and "SpectrumMonitor" in config
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4
    assert {g["name"] for g in last["optimizer_states"][0]["param_groups"]} == {"muon", "adamw"}
    out = capsys.readouterr().out
    summary = out[out.index("lightning-muon: fit stopped after 4 optimizer steps.") :]
    assert f"metrics:     {run / 'metrics.csv'}" in summary
    assert f"tensorboard --logdir {tmp_path / 'lightning_logs'}" in summary
    assert f"last:        {run / 'checkpoints' / 'last.ckpt'}" in summary
    final = float(val[-1]["val_loss"])
    assert f"{final:.4f} nats per byte = {final / math.log(2):.4f} bits per byte" in summary
    # the documented evaluation of a checkpoint
    validate = [
        "validate",
        *quickstart_args(tmp_path, 4)[1:],
        f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
    ]
    main(validate)
    assert "val_bpb" in capsys.readouterr().out


def test_resumed_run_extends_the_schedule(tmp_path, capsys):
    """Resuming with a larger max_steps stretches the schedule to the new length (never lr 0
    for the extra steps), says so, and the progress bar counts the run's steps."""
    main(quickstart_args(tmp_path, 4))
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    with pytest.warns(UserWarning, match="now runs over total_steps=8"):
        job = LightningMuonJob(
            GPTLanguageModel,
            ByteCorpusDataModule,
            args=quickstart_args(tmp_path, 8, f"--ckpt_path={last}"),
            save_config_kwargs={"overwrite": True},
        )
    rows = read_metrics(tmp_path / "lightning_logs" / "version_1")
    lrs = {int(r["step"]): float(r["lr-NorMuon/muon"]) for r in rows if r.get("lr-NorMuon/muon")}
    schedule = WarmupCosineLR(
        torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.02), total_steps=8, warmup_steps=4
    )
    expected = {k: 0.02 * schedule.multiplier(k) for k in range(4, 8)}
    assert {k: lrs[k] for k in expected} == pytest.approx(expected)
    assert all(lrs[k] > 0 for k in expected)
    bar = job.trainer.progress_bar_callback.train_progress_bar
    assert (bar.n, bar.total) == (8, 8)
    assert "fit stopped after 8 optimizer steps" in capsys.readouterr().out


def test_switching_the_model_optimizer_uses_its_own_default_lr(capsys):
    """The recipe's lr belongs to NorMuon; --model.optimizer adamw runs at AdamW's default and
    the log says which lr was used and why."""
    args = ["--config", QUICKSTART, "--model.optimizer=adamw", "--trainer.logger=false"]
    job = LightningMuonJob(GPTLanguageModel, ByteCorpusDataModule, args=args, run=False)
    settings = job.model.check_optimizer_settings()
    assert settings["cls"] is torch.optim.AdamW and "lr" not in settings["kwargs"]
    default = LightningMuonJob(
        GPTLanguageModel, ByteCorpusDataModule, args=args[:2] + args[3:], run=False
    )
    assert default.model.check_optimizer_settings()["kwargs"] == {"lr": 0.02}
    line = lm.lightning.factory.describe_settings(torch.optim.AdamW, settings["kwargs"])
    assert line.startswith("AdamW: lr=0.001 (AdamW's default), weight_decay=0.1 (the adamw baseline)")


def test_model_block_size_alone_sets_the_context_of_model_and_data():
    job = LightningMuonJob(
        GPTLanguageModel,
        ByteCorpusDataModule,
        args=["--config", QUICKSTART, "--model.block_size=256", "--trainer.logger=false"],
        run=False,
    )
    assert job.model.config.block_size == 256 and job.datamodule.block_size == 256


def test_the_command_offers_fit_and_validate_and_answers_help_without_lightning(capsys):
    assert set(LightningMuonJob.subcommands()) == {"fit", "validate"}
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and capsys.readouterr().out == TOP_LEVEL_HELP
    assert "{fit,validate}" in TOP_LEVEL_HELP
    for subcommand in ("test", "predict"):
        with pytest.raises(SystemExit) as info:
            main([subcommand])
        assert info.value.code == 2
        assert "invalid choice" in capsys.readouterr().err
    probe = (
        "import sys\nfrom lightning_muon.cli import main\ntry:\n    main(['--help'])\n"
        "except SystemExit:\n    pass\nprint('lightning.pytorch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr[-2000:]


def test_python_dash_m_entry_point_reports_errors_with_exit_status_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lightning_muon.cli", "fit", "--model.optimizer=nomuon"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "lightning-muon: error: Unknown optimizer 'nomuon'. Valid names: adamuon, adamw, muon"
        )
    )
    assert "Traceback" not in result.stderr


def test_main_without_litgpt_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "litgpt", None)  # import litgpt now fails
    monkeypatch.delitem(sys.modules, "lightning_muon.lightning.gpt")
    with pytest.raises(SystemExit) as info:
        main(["fit"])
    assert info.value.code == 2
    assert "pip install 'lightning-muon[litgpt]'" in capsys.readouterr().err
