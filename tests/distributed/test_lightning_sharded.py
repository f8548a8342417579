"""Lightning's and Fabric's ``ModelParallelStrategy`` (FSDP2) on 2 CPU processes, the FSDP2 how-to's
script as written, and Lightning's ``FSDPStrategy`` (FSDP1) on CUDA."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dist_launch import run_job  # noqa: E402

from tests.test_docs import parse_blocks  # noqa: E402

HOWTO = HERE.parents[1] / "docs" / "how-to" / "fsdp2.md"

TOL = 1e-5  # float32 round-off (see test_sharded_training.py)


def howto_script() -> str:
    """The ``train_fsdp2.py`` block of the FSDP2 how-to."""
    blocks = [b for b in parse_blocks(HOWTO.read_text()) if b.code.startswith("# train_fsdp2.py")]
    assert len(blocks) == 1, "the how-to must contain exactly one train_fsdp2.py block"
    return blocks[0].code


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("job_lightning")
    script = out / "train_fsdp2.py"
    script.write_text(howto_script())
    ranks = run_job(HERE / "job_lightning.py", out, world=None, args=(str(script),), timeout=300)
    assert len(ranks) == 2
    return ranks


@pytest.mark.distributed
def test_fabric_model_parallel_matches_one_process_and_resumes(ranks: list[dict]) -> None:
    for rank in ranks:
        fabric = rank["fabric"]
        assert fabric["layouts"] == ["sharded"]
        assert fabric["param_rel_diff"] < TOL
        assert fabric["resume_rel_diff"] < TOL


@pytest.mark.distributed
def test_trainer_runs_one_newton_schulz_per_accumulation_window(ranks: list[dict]) -> None:
    for rank in ranks:
        trainer = rank["trainer"]
        assert trainer["layouts"] == ["sharded"]
        assert (trainer["global_step"], trainer["micro_batches"]) == (4, 8)
        per_step = trainer["owned_buckets"]
        assert per_step > 0
        # the count grows at the end of each window of 2 micro-batches only
        assert trainer["ns_after_batch"] == [per_step * ((i + 1) // 2) for i in range(8)]
        assert trainer["ns_calls"] == 4 * per_step


@pytest.mark.distributed
def test_trainer_checkpoint_keeps_sharded_state_and_resumes(ranks: list[dict]) -> None:
    for rank in ranks:
        trainer = rank["trainer"]
        assert trainer["state_is_dtensor"] == {
            "step": False,
            "momentum_buffer": True,
            "row_second_moment": True,
        }
        assert trainer["checkpoints"] == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"]
        assert trainer["resume_rel_diff"] < TOL


@pytest.mark.distributed
def test_trainer_ddp_strategy_orthogonalizes_each_matrix_once(ranks: list[dict]) -> None:
    ddp = [rank["ddp"] for rank in ranks]
    for r in ddp:
        assert r["layouts"] == ["replicated"] and r["replicas_identical"]
    # across both ranks, every matrix once per step: no replicated Newton–Schulz
    assert sum(r["ns_matrices"] for r in ddp) == ddp[0]["steps"] * ddp[0]["matrices"]


@pytest.mark.distributed
def test_howto_script_trains_the_quickstart_model(ranks: list[dict]) -> None:
    printed = ranks[0]["howto"]["stdout"]  # rank 0 prints
    assert "10 parameters on the muon branch, 7 on adamw" in printed
    loss = re.search(r"val_loss (\d+\.\d+) after 4 steps", printed)
    assert loss is not None, printed[-2000:]
    assert float(loss.group(1)) < 5.55  # below ln 256, the loss of a uniform guess


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Lightning's FSDPStrategy needs CUDA")
@pytest.mark.parametrize("given", ["module", "params"])
def test_lightning_fsdp_strategy_trains_on_one_gpu(tmp_path: Path, given: str) -> None:
    import lightning as L
    from lightning.pytorch.strategies import FSDPStrategy
    from tiny_transformer import batches, loss_fn, make_model
    from torch.utils.data import DataLoader

    from lightning_muon import NorMuon

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_model()

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            return loss_fn(self.net, batch)

        def configure_optimizers(self) -> NorMuon:
            return NorMuon(self if given == "module" else self.parameters())

    trainer = L.Trainer(
        accelerator="cuda", devices=1, strategy=FSDPStrategy(), max_steps=3, logger=False,
        enable_progress_bar=False, enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(Module(), DataLoader(batches(3), batch_size=None))
    opt = (
        trainer.optimizers[0].optimizer
        if hasattr(trainer.optimizers[0], "optimizer")
        else trainer.optimizers[0]
    )
    assert opt.routing.branch_of("net.wte.weight") == "adamw"
    assert opt.routing.branch_of("net.blocks.0.qkv.weight") == "muon"
    qkv = next(
        p
        for g in opt.param_groups
        for n, p in zip(g["param_names"], g["params"])
        if n == "net.blocks.0.qkv.weight"
    )
    assert int(opt.state[qkv]["step"]) == 3
