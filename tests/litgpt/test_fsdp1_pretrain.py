"""Stock ``litgpt pretrain --devices 2`` (FSDP1, ``HYBRID_SHARD``) with a Muon-family recipe, on 2 gloo ranks."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/distributed"))

from dist_launch import run_job  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def test_stock_litgpt_pretrain_on_two_devices_trains_with_fsdp1(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(
        "TORCHDYNAMO_DISABLE", "1"
    )  # litgpt always compiles; the eager model is the same
    out = tmp_path / "job"
    args = (
        "pretrain", "--config", "recipes/litgpt/tiny/normuon.yaml", "--devices", "2",
        "--train.max_tokens", "8192", "--train.log_interval", "1", "--eval.final_validation", "false",
        "--out_dir", str(tmp_path / "run"),
    )  # fmt: skip
    (record,) = run_job(
        ROOT / "tests/litgpt/litgpt_cpu_fsdp.py", out, world=2, args=args, timeout=600
    )
    assert record["optimizer"] == "NorMuon" and record["world"] == 2
    routing, shapes = record["routing"], record["shapes"]
    assert routing["transformer.wte.weight"] == routing["lm_head.weight"] == "adamw"
    assert routing["transformer.h.0.norm_1.weight"] == "adamw"
    assert (
        routing["transformer.h.3.attn.qkv.weight"]
        == routing["transformer.h.0.mlp.proj.weight"]
        == "muon"
    )
    assert shapes["transformer.h.0.mlp.proj.weight"] == [
        128,
        512,
    ]  # original shapes, not 1-D slices
    log = (out / "log0.txt").read_text()
    assert (
        "NorMuon routing of the FSDP1 parameters" in log
        and "16 parameters on the muon branch" in log
    )
    losses = [float(x) for x in re.findall(r"loss train: ([0-9.]+)", log)]
    assert len(losses) == 8 and losses[-1] < losses[0] - 1.0, losses
    assert (tmp_path / "run/final/lit_model.pth").is_file()
