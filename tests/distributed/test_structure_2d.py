"""Per-head and per-expert matrices on 2-D meshes of 4 gloo processes equal one process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dist_launch import run_job  # noqa: E402

from lightning_muon.optim.registry import OPTIMIZERS  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

NAMES = [cls.__name__ for cls in OPTIMIZERS.values()]
#: float32 round-off of partial sums added in another order (measured: ≤ 1e-7)
TOL = 1e-5


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("job_structure_2d")
    ranks = run_job(HERE / "job_structure_2d.py", out, world=4, timeout=600)
    assert [r["rank"] for r in ranks] == [0, 1, 2, 3]
    return ranks


def _equal_to_one_process(result: dict) -> None:
    assert result["param_rel_diff"] < TOL and result["state_rel_diff"] < TOL, result
    assert result["moved"] > 1e-3, result  # the weights did change


@pytest.mark.parametrize("structure", ["on", "off"])
@pytest.mark.parametrize("mesh", ["2x2", "1x4"])
@pytest.mark.parametrize("name", NAMES)
def test_per_head_blocks_under_tensor_parallelism(
    ranks: list[dict], name: str, mesh: str, structure: str
) -> None:
    for rank in ranks:
        result = rank["per_head"][f"{name} {mesh} {structure}"]
        _equal_to_one_process(result)
        if structure == "on":  # whole heads on every rank: updated where they are, never gathered
            assert result["gathered"] == [], result
            assert result["orthogonalized"] > 0
        else:  # the fused weights are gathered to their owners as whole matrices
            assert result["gathered"] == [
                "transformer.h.0.attn.qkv.weight", "transformer.h.1.attn.qkv.weight"
            ]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_blocks_that_straddle_shards_are_gathered(ranks: list[dict], name: str) -> None:
    for rank in ranks:
        result = rank["per_head"][f"{name} 2x2 rows"]
        _equal_to_one_process(result)
        assert result["gathered"] == [
            f"transformer.h.{i}.attn.qkv.weight[{b}]" for i in (0, 1) for b in (0, 1)
        ], result


@pytest.mark.parametrize("structure", ["on", "off"])
@pytest.mark.parametrize("layout", ["rows over dp", "replicas over dp", "experts over dp"])
@pytest.mark.parametrize("name", NAMES)
def test_per_expert_stacks_over_an_expert_parallel_dimension(
    ranks: list[dict], name: str, layout: str, structure: str
) -> None:
    results = [rank["per_expert"][f"{name} {layout} {structure}"] for rank in ranks]
    for result in results:
        _equal_to_one_process(result)
        if structure == "off":  # one (E, m·n) matrix, gathered
            assert result["gathered"] == ["moe.experts"] and result["state_shapes"]["step"] == []
            continue
        assert result["state_shapes"]["step"] == [4]  # one count per expert
        if name == "NorMuon":
            assert result["state_shapes"]["row_second_moment"] == [4, 6, 1]
        if layout == "rows over dp":  # each expert's rows on two ranks: gathered
            assert result["gathered"] == [f"moe.experts[{e}]" for e in range(4)]
        else:  # whole experts on their ranks: no communication
            assert result["gathered"] == []
    if structure == "on":
        # 4 experts × 3 steps: each orthogonalized once over all ranks, twice with replicas
        expected = 3 * (8 if layout == "replicas over dp" else 4)
        assert sum(r["orthogonalized"] for r in results) == expected
