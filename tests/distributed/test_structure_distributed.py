"""Structured matrices under DDP and FSDP2 (exact) and FSDP1 (refused), on 2 gloo processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dist_launch import run_job  # noqa: E402

from lightning_muon.optim.registry import available_names  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.distributed,
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    ranks = run_job(HERE / "job_structure.py", tmp_path_factory.mktemp("job_structure"), world=2)
    assert [r["rank"] for r in ranks] == [0, 1]
    return ranks


@pytest.mark.parametrize("name", available_names("muon"))
def test_ddp_blocks_equal_one_process(ranks: list[dict], name: str) -> None:
    for r in ranks:
        result = r["ddp"][name]
        assert result["diff"] <= 1e-12 and result["state_diff"] <= 1e-12, result
        # the plain matrix is orthogonalized by its owner; the blocked weights by every replica
        assert result["engine"] == "DistributedEngine" and result["owners"] == ["fc.weight"]
    assert ranks[0]["ddp"][name]["weights"] == ranks[1]["ddp"][name]["weights"]


@pytest.mark.parametrize("name", available_names("muon"))
def test_fsdp2_sharded_blocks_equal_one_process(ranks: list[dict], name: str) -> None:
    for r in ranks:
        result = r["fsdp2"][name]
        assert result["diff"] <= 1e-12 and result["state_diff"] <= 1e-12, result
        # gathered to owners: the head split over both ranks and the three experts, split along
        # their rows; heads 0-1 and 3-4 are updated by the rank holding them (no owner)
        assert result["owners"] == [
            "experts[0]", "experts[1]", "experts[2]", "fc.weight", "qkv.weight[2]"
        ], result  # fmt: skip
        if name == "normuon":  # one row statistic per row of each expert, split like the rows
            assert result["state_shapes"]["row_second_moment"] == [3, 8, 1]
    assert ranks[0]["fsdp2"][name]["weights"] == ranks[1]["fsdp2"][name]["weights"]


def test_fsdp1_flat_slice_with_a_structure_is_refused(ranks: list[dict]) -> None:
    for r in ranks:
        assert "has structure 'experts', but it is an FSDP1 flat slice" in r["fsdp1_error"], r
