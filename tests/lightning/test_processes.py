"""Runs in fresh processes: bit-identical checkpoint resume, DDP (2 CPU ranks, gloo) and
FSDP2 through MuonLightningCLI flags (2 CPU ranks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.lightning.scripts.tiny_run import resume_reference
from tests.lightning.tiny_setup import ADAMW_NAMES, MUON_NAMES

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("scripts") / "tiny_run.py"


def run_script(mode: str, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(out)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def test_resume_in_a_new_process_continues_bit_identically(tmp_path):
    """2K steps straight == K steps, checkpoint, restore in a new process, K more steps
    (NorMuon + cosine schedule + gradient accumulation, crossing an epoch boundary)."""
    resume_reference(tmp_path)  # in this process; the continuation runs in a new one
    checkpoint = torch.load(tmp_path / "half.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 5
    [loader] = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader["epoch"] == 1 and loader["position"] > 0  # resumed mid-epoch
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    assert {g["branch"] for g in groups} == {"muon", "adamw"}
    run_script("resume-continue", tmp_path)
    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    for name, weight in straight["weights"].items():
        assert torch.equal(weight, resumed["weights"][name]), name
        for key, value in straight["state"][name].items():
            assert torch.equal(value, resumed["state"][name][key]), (name, key)


@pytest.mark.distributed
def test_ddp_two_cpu_processes_keep_replicas_identical(tmp_path):
    run_script("ddp", tmp_path)
    ranks = [torch.load(tmp_path / f"ddp_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["data_rank"] for r in ranks] == [(0, 2), (1, 2)]
    assert {r["backend"] for r in ranks} == {"gloo"} and {r["world_size"] for r in ranks} == {2}
    for rank in ranks:
        assert set(rank["branches"]["muon"]) == MUON_NAMES
        assert set(rank["branches"]["adamw"]) == ADAMW_NAMES
        assert all(not torch.equal(rank["before"][n], rank["after"][n]) for n in rank["after"])
    for name, weight in ranks[0]["after"].items():
        assert torch.equal(weight, ranks[1]["after"][name]), name


@pytest.mark.distributed
def test_fsdp2_with_cli_optimizer_flags_trains_the_sharded_parameters(tmp_path):
    run_script("fsdp2", tmp_path)
    ranks = [torch.load(tmp_path / f"fsdp2_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for rank in ranks:
        assert rank["sharded"] and rank["holds_live"]
        assert set(rank["branches"]["muon"]) == MUON_NAMES
        assert set(rank["branches"]["adamw"]) == ADAMW_NAMES
        assert all(not torch.equal(rank["before"][n], rank["after"][n]) for n in rank["after"])
    for name, weight in ranks[0]["after"].items():
        assert torch.equal(weight, ranks[1]["after"][name]), name


@pytest.mark.distributed
def test_tensor_parallel_with_cli_optimizer_flags_trains_the_block_parameters(tmp_path):
    """``ModelParallelStrategy(2, 2)``: 4 ranks, litgpt's TP plan and FSDP2 in ``configure_model``."""
    run_script("tp", tmp_path)
    ranks = [torch.load(tmp_path / f"tp_rank{r}.pt", weights_only=True) for r in range(4)]
    for rank in ranks:
        assert rank["sharded"] and rank["holds_live"]
        assert set(rank["branches"]["muon"]) == MUON_NAMES
        assert set(rank["branches"]["adamw"]) == ADAMW_NAMES
        assert rank["block_layouts"] == 5  # qkv, proj, fc_1, fc_2, mlp.proj of the one block
        assert all(not torch.equal(rank["before"][n], rank["after"][n]) for n in rank["after"])
    for name, weight in ranks[0]["after"].items():
        assert all(torch.equal(weight, r["after"][name]) for r in ranks[1:]), name
