"""``python -m lightning_muon.litgpt.pretrain``: FSDP2 on 2 gloo processes equals one process.

The oracle is the same recipe on one device: with the same global batch (2 ranks × 4 windows vs
1 × 8; :class:`~lightning_muon.litgpt.StdlibText` slices one global batch per step) and the same
seed, every logged training loss, validation loss and update statistic must agree to float
round-off. Under FSDP1 (stock ``litgpt pretrain`` on several devices) the optimizer must refuse
and name this entry point.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import lightning_muon
from lightning_muon.litgpt.pretrain import main as pretrain_main

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "litgpt" / "tiny" / "normuon.yaml"
COMMON = [
    "--config", str(TINY), "--train.max_tokens", "4096", "--train.global_batch_size", "8",
    "--train.log_interval", "1", "--eval.interval", "2", "--eval.max_iters", "2",
    "--diagnostics_interval", "2", "--data.init_args.max_bytes", "200000",
]  # fmt: skip
WORKING_COMMAND = (
    r"python -m lightning_muon\.litgpt\.pretrain --config <recipe\.yaml> --devices <N>"
)


def _metrics(out: Path) -> dict[int, dict[str, float]]:
    """Logged metrics by step (rows of the CSV logger merged)."""
    with open(next(out.glob("logs/csv/*/metrics.csv"))) as fh:
        merged: dict[int, dict[str, float]] = {}
        for row in csv.DictReader(fh):
            step = int(row.pop("step_", row.get("step", 0)) or 0)
            merged.setdefault(step, {}).update({k: float(v) for k, v in row.items() if v})
    return merged


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp2_two_processes_match_one_process(tmp_path, monkeypatch) -> None:
    # Without the owner-computes engine each rank orthogonalizes only its own rows: other math.
    pytest.importorskip("lightning_muon.distributed", reason="needs the FSDP2 distributed engine")
    monkeypatch.chdir(ROOT)
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "lightning_muon.litgpt.pretrain", *COMMON]
    cmd += ["--devices", "2", "--train.micro_batch_size", "4", "--out_dir", str(two)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stderr + proc.stdout
    assert (two / "final" / "lit_model.pth" / ".metadata").is_file()  # a sharded checkpoint

    one = tmp_path / "one"
    last = pretrain_main(
        [*COMMON, "--devices", "1", "--train.micro_batch_size", "8", "--out_dir", str(one)]
    )
    assert last["step"] == 4

    m1, m2 = _metrics(one), _metrics(two)
    keys = [k for k in m1[1] if k.startswith("update/")]
    assert "update/transformer.h.0.attn.qkv.weight/row_norm_cv" in keys
    assert "update/muon/rms" in keys and "update/adamw/rms" in keys
    assert m1[1]["update/muon/rms"] > 0
    compared = 0
    for step in m1:
        for key in ("loss", "val_loss", *keys):
            if key in m1[step]:
                # a cv is a small spread of nearly equal row norms: compare it absolutely
                tol = {"abs": 1e-4} if "_cv" in key else {"rel": 2e-4}
                assert m2[step][key] == pytest.approx(m1[step][key], **tol), (step, key)
                compared += 1
    assert compared > 2 * len(keys)


@pytest.fixture
def gloo_world_of_one():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _fsdp1_model() -> nn.Module:
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = nn.Sequential(nn.Embedding(64, 8), nn.Linear(8, 8), nn.Linear(8, 64))
    return FullyShardedDataParallel(model, use_orig_params=True, device_id=torch.device("cpu"))


@pytest.mark.distributed
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fsdp1_is_refused_with_the_working_command(gloo_world_of_one) -> None:
    model = _fsdp1_model()
    for params in (model, model.named_parameters()):
        with pytest.raises(ValueError, match=WORKING_COMMAND):
            lightning_muon.NorMuon(params)


@pytest.mark.distributed
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fsdp1_plain_tensors_are_refused_with_the_working_command(gloo_world_of_one) -> None:
    """What stock ``litgpt pretrain`` passes on several devices: FSDP1's unnamed original parameters."""
    with pytest.raises(ValueError, match=WORKING_COMMAND):
        lightning_muon.NorMuon(_fsdp1_model().parameters(), vocab_size=64)
