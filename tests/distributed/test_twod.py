"""Block layouts (tensor × data parallelism) on a 2×2 mesh of 4 gloo processes against one process.

One job (``job_twod.py``) measures everything; these tests assert on what it wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dist_launch import run_job  # noqa: E402
from job_twod import VARIANTS  # noqa: E402

from lightning_muon.optim.registry import OPTIMIZERS  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

#: float32 round-off after 3 steps: whole-matrix sums are added in another order
TOL = 1e-5


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("job_twod")
    ranks = run_job(HERE / "job_twod.py", out, world=4, timeout=300)
    assert [r["rank"] for r in ranks] == [0, 1, 2, 3]
    return ranks


def test_blocks_are_where_torch_puts_them(ranks: list[dict]) -> None:
    for rank in ranks:
        for layout, r in rank["mapping"].items():
            assert r["torch_split_equal"] and r["full_tensor_equal"], (rank["rank"], layout)


@pytest.mark.parametrize("variant", [f"{name} {extra}" for name, extra in VARIANTS])
def test_hand_placed_layouts_equal_one_process(ranks: list[dict], variant: str) -> None:
    for rank in ranks:
        r = rank["hand"][variant]
        assert r["param_full"] < TOL and r["param_local"] < TOL, r
        assert r["state_full"] < TOL and r["state_local"] < TOL, r
        # 9 layouts × 4 shapes × 2 copies in blocks; HSDP and (Shard(0), Replicate()) stay row shards
        assert r["block_params"] == 72 and r["row_params"] == 16, r
    # a block-laid-out matrix is orthogonalized once per step, a row-sharded one once per replica group
    assert sum(rank["hand"][variant]["orthogonalized_per_step"] for rank in ranks) == 72 + 2 * 16


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_tensor_parallel_then_fully_shard_equals_one_process(ranks: list[dict], name: str) -> None:
    for rank in ranks:
        r = rank["model"][name]
        assert r["placements"]["fc1.weight"] == ["_S(0, 2)", "S(0)"]
        assert r["placements"]["fc2.weight"] == ["S(0)", "S(1)"]
        assert all(r["storage_is_block"].values()) and len(r["storage_is_block"]) == 4
        assert r["param_rel_diff"] < TOL and r["state_rel_diff"] < TOL, r


def test_unsupported_layouts_are_refused_before_anything_changes(ranks: list[dict]) -> None:
    for rank in ranks:
        refusals = rank["refusals"]
        assert refusals["partial"].startswith("ValueError: parameter 'attn.proj.weight'"), refusals
        assert "Partial" in refusals["partial"]
        assert refusals["partial_unchanged"]
        assert refusals["uneven"].startswith("ValueError: parameter 'mlp.proj.weight'"), refusals
        assert "uneven custom sharding" in refusals["uneven"]
