"""DCP checkpoints of a litgpt GPT under TP × FSDP2: saved on a 2×2 mesh, resumed on 4×1, 1×4 and
one process, continuing exactly as the uninterrupted run (4 gloo processes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dist_launch import run_job  # noqa: E402

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

JOB = HERE / "job_dcp_layouts.py"
#: float32 round-off: shards sum in other orders on each layout (the optimizer itself is exact)
TOL = 1e-5
LAYOUTS = {"4x1": (4, 1), "1x4": (1, 4), "one process": (1, 1)}


@pytest.fixture(scope="module", params=["normuon", "adamuon", "normuon-heads"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    name = request.param
    ckpt = tmp_path_factory.mktemp(f"dcp_{name}")
    run_job(JOB, ckpt / "save", world=4, args=("save", str(ckpt), name), timeout=300)
    return name, ckpt


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_resume_on_another_layout_continues_the_uninterrupted_run(checkpoint, layout, tmp_path):
    name, ckpt = checkpoint
    dp, tp = LAYOUTS[layout]
    world = dp * tp if dp * tp > 1 else None
    ranks = run_job(
        JOB, tmp_path, world=world, args=("load", str(ckpt), name, str(dp), str(tp)), timeout=300
    )
    assert len(ranks) == dp * tp
    for r in ranks:
        assert r["layout"] == f"{dp}x{tp}"
        assert r["param_rel_diff"] < TOL, r
