"""``python -m lightning_muon.litgpt.pretrain``: FSDP2 on 2 gloo processes equals one process.

The oracle is the same recipe on one device: with the same global batch (2 ranks × 4 windows vs
1 × 8; :class:`~lightning_muon.litgpt.StdlibText` slices one global batch per step) and the same
seed, the final weights and every logged update statistic must agree to float round-off (litgpt
logs rank 0's own training loss, which is not comparable). Under FSDP1 (stock ``litgpt pretrain`` on several devices) the optimizer routes by the
names FSDP keeps (``test_fsdp1_pretrain.py`` runs it on two ranks).
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
    # litgpt compiles the model; eager is the same model and spares a cold compile per process
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TORCHDYNAMO_DISABLE="1")
    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stderr + proc.stdout

    assert (two / "final" / "lit_model.pth").is_file()  # litgpt's full checkpoint, one file
    assert "NorMuon routing:" in proc.stdout and "transformer.wte.weight" in proc.stdout

    one = tmp_path / "one"
    pretrain_main(
        [*COMMON, "--devices", "1", "--train.micro_batch_size", "8", "--out_dir", str(one)]
    )

    m1, m2 = _metrics(one), _metrics(two)
    keys = [k for k in m1[1] if k.startswith("update_norm/")]
    # the Lightning callback's schema (UpdateNormMonitor), on litgpt's iteration axis
    assert "update_norm/transformer.h.0.attn.qkv.weight/row_cv" in keys
    assert "update_norm/transformer.h.0.attn.qkv.weight/update_to_weight" in keys
    assert "update_norm/muon/rms" in keys and "update_norm/adamw/rms" in keys
    assert m1[1]["update_norm/muon/rms"] > 0
    assert m1[1]["update_norm/transformer.wte.weight/rms"] > 0  # the AdamW branch moved too
    compared = 0
    for step in m1:
        for key in keys:  # litgpt logs rank 0's own loss; the update statistics are global
            if key in m1[step]:
                # a cv is a small spread of nearly equal row norms: compare it absolutely
                tol = {"abs": 1e-4} if "_cv" in key else {"rel": 2e-4}
                assert m2[step][key] == pytest.approx(m1[step][key], **tol), (step, key)
                compared += 1
    assert compared >= 2 * len(keys)
    w1 = torch.load(one / "final" / "lit_model.pth", weights_only=True)["model"]
    w2 = torch.load(two / "final" / "lit_model.pth", weights_only=True)["model"]
    assert w1.keys() == w2.keys()
    for name in w1:  # the trained weights: FSDP2 on 2 ranks = one process
        assert float((w2[name] - w1[name]).abs().max() / w1[name].abs().max()) < 1e-4, name


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
def test_fsdp1_plain_tensors_route_by_the_names_fsdp_keeps(gloo_world_of_one) -> None:
    """What stock ``litgpt pretrain`` passes on several devices: FSDP1's unnamed original parameters."""
    model = _fsdp1_model()
    for params in (model, model.named_parameters(), model.parameters()):
        opt = lightning_muon.NorMuon(params)
        assert opt.routing.names("muon") == [
            "1.weight"
        ]  # embedding and the head to the vocabulary: AdamW
    model(torch.randint(0, 64, (2, 5))).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(
        not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True) if p.numel()
    )
