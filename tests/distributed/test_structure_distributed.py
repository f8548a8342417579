"""Structured matrices under DDP (exact) and FSDP2 (refused), on 2 gloo processes."""

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
        assert result["diff"] <= 1e-12, result
        # the plain matrix is orthogonalized by its owner; the blocked weights by every replica
        assert result["engine"] == "DistributedEngine" and result["owners"] == ["fc.weight"]
    assert ranks[0]["ddp"][name]["weights"] == ranks[1]["ddp"][name]["weights"]


def test_fsdp2_sharded_structured_weight_is_refused(ranks: list[dict]) -> None:
    for r in ranks:
        # the first structured weight of the module (its own parameter before its children's)
        assert "experts has structure 'experts', but it is sharded" in r["fsdp2_error"]
