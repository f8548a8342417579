"""The tiny recipe trains with the stock ``litgpt pretrain`` CLI; bad recipes stop before training.

The successful run is a real ``litgpt pretrain`` subprocess with ``TORCHDYNAMO_DISABLE=1``: litgpt
always wraps the model in ``torch.compile``, whose cold start (30 s to minutes on a shared 2-core
CPU) would dominate a three-iteration test; the optimizer is never compiled either way.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_muon.data.corpus import load_corpus

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "litgpt" / "tiny" / "normuon.yaml"
FAST = ["--data.init_args.max_bytes", "200000", "--eval.max_iters", "2"]


def _env() -> dict[str, str]:
    env = dict(os.environ, TORCHDYNAMO_DISABLE="1", PYTHONPATH=str(ROOT))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.mark.slow
def test_stock_litgpt_pretrain_trains_the_tiny_recipe(tmp_path) -> None:
    litgpt = Path(sys.executable).with_name("litgpt")
    cmd = [str(litgpt), "pretrain", "--config", str(TINY), "--out_dir", str(tmp_path / "out")]
    cmd += ["--train.max_tokens", "3072", "--train.log_interval", "1", *FAST]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ckpt = torch.load(tmp_path / "out/final/lit_model.pth", weights_only=True)
    names = list(ckpt["model"])  # litgpt's parameter order, which is model.parameters()'s
    groups = {g["branch"]: g for g in ckpt["optimizer"]["param_groups"]}
    adamw = {names[int(n.removeprefix("param"))] for n in groups["adamw"]["param_names"]}
    muon = {names[int(n.removeprefix("param"))] for n in groups["muon"]["param_names"]}
    assert {"transformer.wte.weight", "lm_head.weight"} <= adamw
    assert muon == {n for n in names if ".attn." in n or ".mlp." in n}
    # litgpt rewrote both groups' lr to the same scheduled value; the ratio is untouched
    assert groups["muon"]["lr"] == groups["adamw"]["lr"] > 0
    assert groups["adamw"]["adamw_lr_ratio"] == 1.0
    assert ckpt["iter_num"] == 6 and ckpt["step_count"] == 3  # 2 micro-batches of 4 per step

    with open(next((tmp_path / "out/logs/csv").glob("*/metrics.csv"))) as fh:
        rows = list(csv.DictReader(fh))
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    val = [float(r["val_loss"]) for r in rows if r.get("val_loss")]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert val and math.isfinite(val[-1]) and val[-1] < math.log(256)


def _litgpt_in_process(monkeypatch, tmp_path: Path, recipe: dict, *extra: str) -> None:
    from litgpt.__main__ import main

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    argv = ["litgpt", "pretrain", "--config", str(path), "--out_dir", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", [*argv, *FAST, *extra])
    monkeypatch.chdir(ROOT)
    main()


@pytest.fixture
def tiny() -> dict:
    return yaml.safe_load(TINY.read_text())


def _no_training_happened(tmp_path: Path) -> None:
    assert not (tmp_path / "out" / "final").exists()
    assert not list((tmp_path / "out").glob("logs/csv/*/metrics.csv"))


def test_stock_litgpt_refuses_a_missing_data_dir(monkeypatch, tmp_path, tiny) -> None:
    tiny["data"]["init_args"]["data_dir"] = str(tmp_path / "missing")
    with pytest.raises((ValueError, SystemExit)) as err:
        _litgpt_in_process(monkeypatch, tmp_path, tiny)
    assert "StdlibText: data_dir=" in str(err.value) and "does not exist" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_stock_litgpt_refuses_an_unknown_optimizer(monkeypatch, tmp_path, tiny) -> None:
    tiny["optimizer"]["class_path"] = "lightning_muon.NorMoun"
    with pytest.raises(
        AttributeError, match=r"NorMoun'; its optimizers are AdaMuon, Muon, .*NorMuon"
    ):
        _litgpt_in_process(monkeypatch, tmp_path, tiny)
    _no_training_happened(tmp_path)


def test_stock_litgpt_refuses_a_tokenizer_larger_than_the_embedding(monkeypatch, tmp_path, tiny):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([bytes(load_corpus(max_bytes=20_000).tolist()).decode()], trainer)
    (tmp_path / "bpe").mkdir()
    tok.save(str(tmp_path / "bpe" / "tokenizer.json"))
    with pytest.raises(
        ValueError, match=r"has 320 token ids but the model's padded_vocab_size is 256"
    ):
        _litgpt_in_process(monkeypatch, tmp_path, tiny, "--tokenizer_dir", str(tmp_path / "bpe"))
    _no_training_happened(tmp_path)
