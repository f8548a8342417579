"""No host reads on the distributed hot path, and gradients that change mid-training, on 2 gloo ranks.

``job_host_reads.py`` runs FSDP2 (``fully_shard``), replicated plain tensors (DDP) and FSDP1
(``use_orig_params=True``); these tests assert on what each rank wrote. Steady-state steps read
nothing back with ``nonfinite="skip"`` and one flag with ``"raise"``, as in one process
(``tests/optim/test_host_reads.py``); a gradient present on some ranks only never lets the ranks
diverge or deadlock (:mod:`lightning_muon.distributed.flags`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dist_launch import run_job  # noqa: E402
from job_host_reads import COUNTED, DROPPED, LAYOUTS  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.distributed,
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
]

PARTIAL = f"RuntimeError: NorMuon: gradients of {DROPPED} exist on some ranks only"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("host_reads")
    result = run_job(HERE / "job_host_reads.py", out, world=2, timeout=300)
    assert [r["rank"] for r in result] == [0, 1]
    return result


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", COUNTED)
@pytest.mark.parametrize(("mode", "expected"), [("skip", 0), ("raise", 1)])
def test_host_reads_per_distributed_step(
    ranks: list[dict], layout: str, name: str, mode: str, expected: int
) -> None:
    for rank in ranks:
        result = rank[layout]["host_reads"][f"{name}_{mode}"]
        assert result["counts"] == [expected] * 3, (rank["rank"], result)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_partial_gradients_mid_training_raise_on_every_rank(ranks: list[dict], layout: str) -> None:
    for rank in ranks:
        result = rank[layout]["changed_presence"]["partial_raise"]
        assert result["held"]
        assert result["error"].startswith(PARTIAL), (rank["rank"], result["error"])
        assert result["unchanged"] and result["state_unchanged"]
        assert result["skipped_steps"] == 0 and result["grads_restored"]
        assert result["next_step"] == "no error" and result["next_step_moved"]
        assert result["next_equal_across_ranks"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_partial_gradients_mid_training_skip_on_every_rank(ranks: list[dict], layout: str) -> None:
    """Rank 1 dropped a gradient: both ranks leave everything unchanged and count the skip; rank 1
    (whose gradients changed) warns; its gradients are as it left them after the step."""
    for rank in ranks:
        result = rank[layout]["changed_presence"]["partial_skip"]
        assert result["error"] == "no error", result["error"]
        assert result["unchanged"] and result["state_unchanged"], result["changed"]
        assert result["skipped_steps"] == 1 and result["grads_restored"]
        assert result["weights_equal_across_ranks"]
        if rank["rank"] == 1:
            assert len(result["warnings"]) == 1
            assert result["warnings"][0].startswith(PARTIAL.removeprefix("RuntimeError: "))
            assert "skipped on every rank" in result["warnings"][0]
        else:
            assert result["warnings"] == []
        assert result["next_step"] == "no error" and result["next_step_moved"]
        assert result["next_equal_across_ranks"] and result["next_skipped_steps"] == 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_gradient_dropped_on_every_rank_steps_the_others(ranks: list[dict], layout: str) -> None:
    for rank in ranks:
        result = rank[layout]["changed_presence"]["everywhere_skip"]
        assert result["error"] == "no error" and result["warnings"] == []
        assert result["changed"] == [n for n in rank[layout]["names"] if n != DROPPED]
        assert result["skipped_steps"] == 0 and result["grads_restored"]
        assert result["weights_equal_across_ranks"]
        assert result["next_step"] == "no error" and result["next_equal_across_ranks"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_a_nonfinite_gradient_mid_training_on_one_rank(
    ranks: list[dict], layout: str, mode: str
) -> None:
    """Found on the fast path (no host read): both ranks skip, or both raise naming the matrix."""
    for rank in ranks:
        result = rank[layout]["changed_presence"][f"nonfinite_{mode}"]
        if mode == "skip":
            assert result["error"] == "no error" and result["skipped_steps"] == 1
        else:
            assert result["error"].startswith(
                f"FloatingPointError: NorMuon: non-finite gradient in {DROPPED};"
            ), result["error"]
        assert result["unchanged"] and result["state_unchanged"], result["changed"]
        assert result["weights_equal_across_ranks"] and result["warnings"] == []
        assert result["next_step"] == "no error" and result["next_equal_across_ranks"]
