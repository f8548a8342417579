"""build_optimizer / available_optimizers / schedules: routing, validation, the AdamW baseline."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

import lightning_muon as lm
from lightning_muon.lightning import (
    OptimizerConfigError,
    WarmupConstantLR,
    WarmupCosineLR,
    WarmupLinearLR,
    WarmupStableDecayLR,
    available_optimizers,
    build_lr_scheduler,
    build_optimizer,
)
from lightning_muon.lightning.gpt import GPTLanguageModel
from tests.lightning.tiny_setup import ADAMW_NAMES, MUON_NAMES, TINY_MODEL, branches


def tiny_gpt() -> GPTLanguageModel:
    torch.manual_seed(0)
    return GPTLanguageModel(**TINY_MODEL, optimizer="adamw")


def test_available_optimizers_are_the_family_plus_adamw():
    registry = available_optimizers()
    assert registry == {
        "muon": lm.Muon,
        "normuon": lm.NorMuon,
        "adamuon": lm.AdaMuon,
        "muon_nsr": lm.MuonNSR,
        "muon_vs": lm.MuonVS,
        "spectral_muon": lm.SpectralMuon,
        "adamw": torch.optim.AdamW,
    }


@pytest.mark.parametrize(
    "name", ["normuon", "NorMuon", "NORMUON", "lightning_muon.NorMuon", lm.NorMuon]
)
def test_names_class_names_paths_and_classes_resolve(name):
    assert type(build_optimizer(tiny_gpt(), name)) is lm.NorMuon


@pytest.mark.parametrize("name", sorted(available_optimizers()))
def test_every_optimizer_routes_the_gpt_by_name(name):
    optimizer = build_optimizer(tiny_gpt(), name, lr=1e-3)
    if name == "adamw":
        groups = {g["name"]: set(g["param_names"]) for g in optimizer.param_groups}
        assert groups["decay"] == MUON_NAMES | {"model.lm_head.weight"}
        assert groups["no_decay"] == ADAMW_NAMES - {"model.lm_head.weight"}  # norms, embedding
        return
    assert branches(optimizer) == {"muon": MUON_NAMES, "adamw": ADAMW_NAMES}
    assert {g["name"] for g in optimizer.param_groups} == {"muon", "adamw"}


def test_unknown_optimizer_lists_the_valid_names():
    with pytest.raises(OptimizerConfigError) as info:
        build_optimizer(tiny_gpt(), "nomuon")
    message = str(info.value)
    assert "'nomuon'" in message
    for name in available_optimizers():
        assert name in message


def test_hyperparameters_a_class_does_not_take_are_named():
    with pytest.raises(OptimizerConfigError, match=r"'betas'.*'foo'.*Accepted: .*momentum"):
        build_optimizer(tiny_gpt(), "muon", foo=1, betas=(0.9, 0.99))
    with pytest.raises(OptimizerConfigError, match="'momentum'"):
        build_optimizer(tiny_gpt(), "adamw", momentum=0.9)


def test_invalid_values_are_rejected_with_the_value():
    with pytest.raises(OptimizerConfigError, match=r"^NorMuon: Invalid lr: -1\.0"):
        build_optimizer(tiny_gpt(), "normuon", lr=-1.0)


def test_model_without_matrix_parameters_is_refused_for_muon_but_fine_for_adamw():
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4))
    with pytest.raises(OptimizerConfigError, match="no matrix parameters"):
        build_optimizer(model, "muon")
    assert [g["name"] for g in build_optimizer(model, "adamw").param_groups] == ["no_decay"]
    frozen = nn.Linear(3, 3).requires_grad_(False)
    with pytest.raises(OptimizerConfigError, match="no trainable parameters"):
        build_optimizer(frozen, "adamw")


def test_adamw_baseline_splits_decay_and_uses_the_registry_settings():
    """Every path builds one baseline: the registry's LLM settings on top of AdamW's defaults."""
    for name in ("adamw", "AdamW", "torch.optim.AdamW", torch.optim.AdamW):
        optimizer = build_optimizer(tiny_gpt(), name)
        decay, no_decay = optimizer.param_groups
        assert (decay["name"], decay["weight_decay"]) == ("decay", 0.1)
        assert decay["betas"] == (0.9, 0.95)
    assert build_optimizer(tiny_gpt(), "adamw", weight_decay=0.01).param_groups[0]["weight_decay"] == 0.01
    assert (no_decay["name"], no_decay["weight_decay"]) == ("no_decay", 0.0)
    assert decay["lr"] == 1e-3
    sgd = build_optimizer(tiny_gpt(), "torch.optim.SGD", lr=0.1, weight_decay=0.5)
    assert [g["weight_decay"] for g in sgd.param_groups] == [0.5, 0.0]


def test_one_resolver_and_one_adamw_baseline_for_every_configuration_path(monkeypatch):
    """--model.optimizer (the mixin), --optimizer (MuonLightningCLI) and a litgpt recipe's
    optimizer: resolve names the same way and build the same AdamW baseline."""
    from lightning_muon.cli import MuonLightningCLI, resolve_optimizer_flags
    from lightning_muon.lightning.mixin import optimizer_settings
    from lightning_muon.litgpt.pretrain import _Run
    from lightning_muon.litgpt.recipes import resolve_optimizer

    for name, cls in [
        ("lightning_muon.NorMuon", lm.NorMuon),
        ("torch.optim.Muon", torch.optim.Muon),
        ("lightning_muon.Muon", lm.Muon),
        ("torch.optim.AdamW", torch.optim.AdamW),
    ]:
        assert optimizer_settings({"optimizer": name})["cls"] is cls
        assert resolve_optimizer_flags(["--optimizer", name])[1] == name
        assert resolve_optimizer({"class_path": name})[0] is cls
    for name in ("normuon", "Muon", "muon-nsr", "adamw", "SGD"):  # bare names: the CLI and mixin
        path = resolve_optimizer_flags([f"--optimizer={name}"])[0].split("=", 1)[1]
        assert (
            lm.lightning.factory.resolve_optimizer_class(path)
            is optimizer_settings({"optimizer": name})["cls"]
        )
    with pytest.raises(ValueError, match="Unknown optimizer 'lightning_muon.NoSuch'"):
        resolve_optimizer({"class_path": "lightning_muon.NoSuch"})

    def groups(optimizer):
        return [(g["name"], g["param_names"], g["weight_decay"]) for g in optimizer.param_groups]

    model = tiny_gpt()
    baseline = groups(build_optimizer(model, "adamw"))
    assert baseline == groups(
        MuonLightningCLI.build_fit_time_optimizer(model, {"class_path": "torch.optim.AdamW"})
    )
    spec = {"class_path": "torch.optim.AdamW", "init_args": {}}
    litgpt_layer = _Run(interval=0)
    litgpt_layer.model = model
    built = litgpt_layer.make_optimizer(None, spec, model.parameters(), fused=False)
    assert [(n, len(p), wd) for n, p, wd in baseline] == [
        (n, len(p), wd) for n, p, wd in groups(built)
    ]
    assert baseline[1][1][0] == "model.transformer.wte.weight"  # embeddings are not decayed


def test_schedule_lengths_are_whole_numbers_and_warmup_is_clamped_to_half_the_run():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    for bad in (10.5, 10.0, True, 0, -3):
        with pytest.raises(
            ValueError, match=f"total_steps must be a positive integer, got {bad!r}"
        ):
            WarmupConstantLR(optimizer, total_steps=bad)
    for bad in (2.5, -1, False):
        with pytest.raises(ValueError, match="warmup_steps must be a non-negative integer"):
            WarmupConstantLR(optimizer, total_steps=10, warmup_steps=bad)
    with pytest.warns(UserWarning, match="warming up over 5 steps"):
        clamped = WarmupLinearLR(optimizer, total_steps=10, warmup_steps=20)
    assert clamped.warmup_steps == 5
    assert [clamped.multiplier(k) for k in (0, 4, 5, 10)] == [0.2, 1.0, 1.0, 0.0]


def _run(schedule, steps):
    for _ in range(steps):
        schedule.optimizer.step()
        schedule.step()
    return schedule


def test_resume_keeps_the_new_length_and_says_so():
    """A checkpoint of a finished 300-step cosine, resumed into a 600-step run, continues on the
    600-step curve (lr > 0) instead of the old curve's end (lr 0), with a warning."""
    new_opt = lambda: torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.02)  # noqa: E731
    done = _run(WarmupCosineLR(new_opt(), total_steps=300, warmup_steps=20), 300)
    assert done.optimizer.param_groups[0]["lr"] == 0.0
    state = done.state_dict()
    longer = WarmupCosineLR(new_opt(), total_steps=600, warmup_steps=20)
    with pytest.warns(UserWarning, match="ran over 300 steps; it now runs over total_steps=600"):
        longer.load_state_dict(state)
    expected = 0.02 * _reference_multiplier("cosine", 300, 600, 20, 0.0)
    assert longer.last_epoch == 300 and longer.total_steps == 600
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx(expected) and expected > 0.01
    straight = _run(WarmupCosineLR(new_opt(), total_steps=600, warmup_steps=20), 300)
    assert _run(longer, 50).get_last_lr() == pytest.approx(_run(straight, 50).get_last_lr())
    same = WarmupCosineLR(new_opt(), total_steps=300, warmup_steps=20)
    with pytest.warns(UserWarning, match="the schedule ends at total_steps=300: it has ended"):
        same.load_state_dict(state)


def _reference_multiplier(kind, k, total, warmup, min_ratio, decay_fraction=0.2):
    """An independent re-statement of the schedule formulas."""
    if k < warmup:
        return (k + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind == "wsd":
        start = max(warmup, total - round(decay_fraction * total))
        if k < start:
            return 1.0
        p = min(1.0, (k - start) / (total - start))
        return 1 - (1 - min_ratio) * p
    p = min(1.0, (k - warmup) / (total - warmup))
    if kind == "cosine":
        return min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * p)) / 2
    return 1 - (1 - min_ratio) * p


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear", "wsd"])
def test_schedules_follow_their_formulas_step_by_step(kind):
    param = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.5)
    total, warmup, min_ratio = 40, 5, 0.1
    scheduler = build_lr_scheduler(
        optimizer, kind, total, warmup_steps=warmup, min_lr_ratio=min_ratio
    )
    for k in range(total + 3):
        expected = 0.5 * _reference_multiplier(kind, k, total, warmup, min_ratio)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12), k
        optimizer.step()
        scheduler.step()


def test_linear_decays_to_zero_and_wsd_has_a_plateau():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    linear = WarmupLinearLR(optimizer, total_steps=10)
    assert linear.multiplier(10) == 0.0 and linear.multiplier(5) == 0.5
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    wsd = WarmupStableDecayLR(optimizer, total_steps=100, warmup_steps=10, decay_fraction=0.2)
    assert [wsd.multiplier(k) for k in (9, 10, 79)] == [1.0, 1.0, 1.0]
    assert wsd.multiplier(90) == pytest.approx(0.5) and wsd.multiplier(100) == 0.0


def test_schedule_state_is_plain_and_loads_with_weights_only():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupStableDecayLR(optimizer, total_steps=20, warmup_steps=2)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    fresh = WarmupStableDecayLR(fresh_opt, total_steps=20, warmup_steps=2)
    fresh.load_state_dict(state)
    assert fresh.last_epoch == 7 and fresh.get_last_lr() == scheduler.get_last_lr()


def test_schedule_arguments_are_validated():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(OptimizerConfigError, match="Unknown lr_schedule 'cosin'.*cosine"):
        build_lr_scheduler(optimizer, "cosin", 10)
    with pytest.raises(OptimizerConfigError, match="total_steps"):
        build_lr_scheduler(optimizer, "cosine", None)
    with pytest.raises(OptimizerConfigError, match="warmup_steps"):
        build_lr_scheduler(optimizer, "cosine", 10, warmup_steps=-1)
    with pytest.raises(OptimizerConfigError, match="'decay_fraction'"):
        build_lr_scheduler(optimizer, "cosine", 10, decay_fraction=0.1)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        WarmupConstantLR(optimizer, total_steps=5, min_lr_ratio=2.0)
    with pytest.raises(ValueError, match="decay_fraction"):
        WarmupStableDecayLR(optimizer, total_steps=5, decay_fraction=1.5)
