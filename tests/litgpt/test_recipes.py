"""Every litgpt recipe parses, builds and routes as litgpt builds it; bad recipes fail early."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import yaml
from litgpt.model import GPT
from litgpt.pretrain import get_lr
from litgpt.utils import instantiate_torch_optimizer

import lightning_muon
from lightning_muon.litgpt import check_recipe, load_recipe
from lightning_muon.litgpt.recipes import model_config

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes" / "litgpt").glob("*/*.yaml"))
HIDDEN = re.compile(r"^transformer\.h\.\d+\.(attn\.(qkv|proj)|mlp\.(fc|proj|fc_1|fc_2))\.weight$")


def test_there_is_a_tiny_and_a_gpu_recipe_per_optimizer() -> None:
    names = {"adamw", *lightning_muon.OPTIMIZERS}
    for family in ("tiny", "pythia-160m"):
        assert {p.stem for p in RECIPES if p.parent.name == family} == names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_builds_and_routes_like_litgpt(path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # recipes name tokenizer_dir relative to the repository root
    recipe = load_recipe(path)
    report = check_recipe(path)
    # Build exactly as `litgpt pretrain` does: litgpt's own instantiation from model.parameters().
    with torch.device("meta"):
        model = GPT(model_config(recipe))
    optimizer = instantiate_torch_optimizer(
        copy.deepcopy(recipe["optimizer"]), model.parameters(), fused=False
    )
    assert type(optimizer).__qualname__ == recipe["optimizer"]["class_path"].rsplit(".", 1)[1]
    if path.stem == "adamw":
        assert "branch" not in optimizer.param_groups[0]
        return
    branch = {id(p): g["branch"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        expected = "muon" if HIDDEN.match(name) else "adamw"
        assert branch[id(p)] == expected == report.branch_of(name), name
    assert branch[id(model.transformer.wte.weight)] == branch[id(model.lm_head.weight)] == "adamw"
    padded = recipe["model_config"]["padded_vocab_size"]
    assert recipe["optimizer"]["init_args"]["vocab_size"] == padded
    assert recipe["data"]["init_args"]["padded_vocab_size"] == padded


def test_adamw_branch_ratio_survives_litgpts_lr_rewrite() -> None:
    """litgpt sets every group's lr each iteration; the AdamW branch must still get lr·ratio."""
    config = model_config(load_recipe(ROOT / "recipes/litgpt/tiny/muon.yaml"))
    torch.manual_seed(0)
    model = GPT(config)
    ref = copy.deepcopy(model.transformer.wte)
    opt = lightning_muon.Muon(
        model.parameters(), lr=0.02, adamw_lr_ratio=0.015, vocab_size=config.padded_vocab_size
    )
    ref_opt = torch.optim.AdamW(ref.parameters(), betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)
    idx = torch.randint(0, 256, (2, 16))
    for it in range(1, 4):
        lr = get_lr(opt.defaults["lr"], it, warmup_iters=2, max_iters=10, min_lr=0.002)
        for group in opt.param_groups:  # what litgpt's fit() does
            group["lr"] = lr
        for group in ref_opt.param_groups:
            group["lr"] = lr * 0.015
        model.zero_grad()
        ref_opt.zero_grad()
        model(idx).square().mean().backward()
        ref.weight.grad = model.transformer.wte.weight.grad.clone()
        opt.step()
        ref_opt.step()
        torch.testing.assert_close(model.transformer.wte.weight, ref.weight)


def _write(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def tiny(monkeypatch) -> dict:
    monkeypatch.chdir(ROOT)
    return load_recipe(ROOT / "recipes/litgpt/tiny/normuon.yaml")


def test_unknown_optimizer_is_refused(tiny, tmp_path) -> None:
    tiny["optimizer"]["class_path"] = "lightning_muon.NorMoun"
    with pytest.raises(
        ValueError, match=r"NorMoun.*Valid names: adamuon, adamw.*lightning_muon\.NorMuon"
    ):
        check_recipe(_write(tmp_path, tiny))


def test_missing_data_dir_is_refused(tiny, tmp_path) -> None:
    tiny["data"]["init_args"]["data_dir"] = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"data\.init_args\.data_dir=.*missing.*does not exist"):
        check_recipe(_write(tmp_path, tiny))


def test_vocabulary_larger_than_padded_vocab_size_is_refused(tiny, tmp_path) -> None:
    for key in ("vocab_size", "padded_vocab_size"):
        tiny["model_config"][key] = 128
    tiny["optimizer"]["init_args"]["vocab_size"] = tiny["data"]["init_args"][
        "padded_vocab_size"
    ] = 128
    with pytest.raises(ValueError, match=r"256 token ids but model_config\.padded_vocab_size=128"):
        check_recipe(_write(tmp_path, tiny))


def test_missing_or_wrong_vocab_hint_is_refused(tiny, tmp_path) -> None:
    del tiny["optimizer"]["init_args"]["vocab_size"]
    with pytest.raises(
        ValueError, match=r"vocab_size=None must equal model_config\.padded_vocab_size=256"
    ):
        check_recipe(_write(tmp_path, tiny))


def test_hidden_width_equal_to_the_vocabulary_is_caught(tiny, tmp_path) -> None:
    """A hidden size equal to the vocabulary makes the shape hint send that matrix to AdamW."""
    tiny["model_config"]["intermediate_size"] = 256
    with pytest.raises(
        ValueError, match=r"h\.0\.mlp\.fc\.weight \(256, 128\) was routed to 'adamw'"
    ):
        check_recipe(_write(tmp_path, tiny))


def test_missing_tokenizer_dir_is_refused(tiny, tmp_path) -> None:
    tiny["tokenizer_dir"] = str(tmp_path / "no_tokenizer")
    with pytest.raises(ValueError, match=r"tokenizer_dir=.*no_tokenizer.*does not exist"):
        check_recipe(_write(tmp_path, tiny))


@pytest.mark.parametrize("size, devices", [("tiny", 2), ("pythia-160m", 8)])
def test_recipes_run_on_the_devices_their_comments_name(size, devices, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    for path in sorted((ROOT / "recipes/litgpt" / size).glob("*.yaml")):
        recipe = load_recipe(path)
        assert f"--devices {devices}" in path.read_text()
        check_recipe({**recipe, "devices": devices})


def test_batch_litgpt_would_assert_on_is_refused_naming_the_value(tiny, tmp_path) -> None:
    tiny["devices"] = 2
    tiny["train"]["micro_batch_size"] = 8  # global 8 over 2 devices: 4 per device < 8
    with pytest.raises(
        ValueError, match=r"train\.micro_batch_size to at most 4.*global_batch_size to at least 16"
    ):
        check_recipe(_write(tmp_path, tiny))
    tiny["devices"], tiny["train"]["global_batch_size"] = 16, 8
    with pytest.raises(ValueError, match=r"train\.global_batch_size to at least 16"):
        check_recipe(_write(tmp_path, tiny))
