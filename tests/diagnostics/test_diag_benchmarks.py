"""The diagnostics benchmark scripts run end to end (tiny settings; no timing is asserted)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("litgpt")
TINY = ["--n-layer", "2", "--n-embd", "32", "--max-bytes", "200000"]


@pytest.mark.slow
def test_callback_overhead_runs() -> None:
    from lightning_muon.benchmarks import callback_overhead

    result = callback_overhead.main(
        ["--steps", "3", "--rounds", "1", "--warmup", "0", "--quiet", *TINY]
    )
    assert result["steps"] == 3 and result["time_with_s"] > 0 and result["time_without_s"] > 0
    assert math.isnan(result["norm_due_extra_ms"])  # no due step within 3 steps
    assert result["attributable_overhead"] == 0.0
