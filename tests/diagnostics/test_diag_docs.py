"""Pages whose numbers a command writes: the diagnostics how-to, Figure 1 and the main job.

Each generated page block must equal what its generator renders from the JSON it saved, and the
JSON's small run (the same command at a tiny size, saved with the numbers) must still come out
of today's code, so a change that moves the numbers fails here until the page is regenerated.
"""

from __future__ import annotations

import json
import math
import platform
import re
from pathlib import Path

import pytest

from lightning_muon.benchmarks import figure1, main_job
from lightning_muon.benchmarks.pages import read_block
from tests.test_docs import _run_page

ROOT = Path(__file__).resolve().parents[2]
FIGURE1_PAGE = ROOT / "docs" / "figure1.md"
FIGURE1_JSON = ROOT / "docs" / "img" / "figure1.json"
MAIN_JOB_PAGE = ROOT / "docs" / "how-to" / "main-job.md"
MAIN_JOB_JSON = ROOT / "docs" / "img" / "main-job.json"


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _same_interpreter(saved: dict) -> None:
    if saved["python"] != platform.python_version():
        pytest.skip(f"numbers made on Python {saved['python']} (its standard library is the data)")


@pytest.mark.slow  # its command-line example trains a tiny run
def test_diagnostics_howto_examples_run() -> None:
    _run_page(ROOT / "docs" / "how-to" / "diagnostics.md")


def test_figure1_page_is_what_its_command_generated() -> None:
    result = _json(FIGURE1_JSON)
    assert read_block(FIGURE1_PAGE, figure1.PAGE_BLOCK) == figure1.page_block(result)
    assert (ROOT / "docs" / "img" / "figure1.png").read_bytes().startswith(b"\x89PNG")
    page = FIGURE1_PAGE.read_text(encoding="utf-8")
    (documented,) = re.findall(r"^python -m lightning_muon\.benchmarks\.figure1 .*$", page, re.M)
    assert documented == result["command"]
    assert result["settings"]["adamw_betas"] == [0.9, 0.95]  # the paper's AdamW baseline
    assert result["settings"]["adamw_weight_decay"] == 0.1


def test_figure1_page_statements_hold_for_its_numbers() -> None:
    """What the page's 'What it shows' says, checked against the saved numbers."""
    runs = _json(FIGURE1_JSON)["runs"]
    adamw, muon, normuon = (runs[k] for k in ("AdamW", "Muon", "NorMuon"))
    assert runs["Muon"]["middle"]["momentum_condition_number"] > 10
    for when in ("middle", "end"):
        a, m, n = adamw[when], muon[when], normuon[when]
        assert a["condition_number"] > 10 and m["condition_number"] < 2
        assert m["condition_number"] < n["condition_number"] < 3
        assert m["row_cv"] > a["row_cv"] > n["row_cv"] and m["row_cv"] >= 3 * n["row_cv"]
        assert m["median_row_cv"] > a["median_row_cv"] > n["median_row_cv"]
    assert normuon["final_loss"] < min(adamw["final_loss"], muon["final_loss"])


@pytest.mark.slow
def test_figure1_small_run_still_gives_the_saved_numbers(tmp_path: Path) -> None:
    pytest.importorskip("litgpt")
    saved = _json(FIGURE1_JSON)
    _same_interpreter(saved)
    out = tmp_path / "fig.png"
    result = figure1.main([*saved["small"]["argv"], "--out", str(out)])
    assert out.read_bytes().startswith(b"\x89PNG")
    assert result["param"] == "model.transformer.h.1.mlp.fc_2.weight"
    for label, run in saved["small"]["runs"].items():
        for when in ("middle", "end"):
            now = result["runs"][label][when]
            assert now["matrices"] == 10  # 5 hidden matrices per block
            for key, value in run[when].items():
                assert now[key] == pytest.approx(value, rel=2e-3), (
                    f"{label} {when} {key}: the code no longer gives the Figure-1 page's numbers; "
                    f"regenerate with `{saved['command']}`"
                )


def test_main_job_table_is_what_its_command_generated() -> None:
    result = _json(MAIN_JOB_JSON)
    assert read_block(MAIN_JOB_PAGE, main_job.PAGE_BLOCK) == main_job.page_block(result)
    assert result["recipe"] == main_job.RECIPE
    val = result["full"]["val_loss"]
    assert sorted(int(s) for s in val) == [100, 200, 300]  # the recipe's validations
    assert 1.0 < val["300"] < math.log(256)


@pytest.mark.slow
def test_main_job_small_run_still_gives_the_saved_losses() -> None:
    pytest.importorskip("litgpt")
    saved = _json(MAIN_JOB_JSON)
    _same_interpreter(saved)
    now = main_job.run_recipe(saved["recipe"], saved["small"]["overrides"], cwd=str(ROOT))
    for key in ("val_loss", "train_loss"):
        expected = {int(s): v for s, v in saved["small"][key].items()}
        assert now[key] == pytest.approx(expected, rel=1e-4), (
            f"{key}: the code no longer gives the main-job page's losses; regenerate with "
            f"`{saved['command']}`"
        )
