"""The diagnostics benchmark scripts run end to end (tiny settings; no timing is asserted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

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


@pytest.mark.slow
def test_figure1_writes_figure_and_numbers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lightning_muon.benchmarks import figure1

    out = tmp_path / "fig.png"
    result = figure1.main(["--steps", "4", "--threads", "1", "--out", str(out), *TINY])
    assert out.read_bytes().startswith(b"\x89PNG")
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["param"] == "model.transformer.h.1.mlp.fc_2.weight" == result["param"]
    for label in ("AdamW", "Muon", "NorMuon"):
        middle = saved["runs"][label]["middle"]
        assert middle["matrices"] == 10  # 5 hidden matrices per block
        assert middle["condition_number"] >= 1 and middle["row_cv"] >= 0
    table = capsys.readouterr().out
    assert "| AdamW |" in table and "| NorMuon |" in table
