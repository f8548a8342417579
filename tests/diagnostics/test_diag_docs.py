"""The diagnostics how-to page: its python examples run and print what the page shows."""

from __future__ import annotations

from pathlib import Path

from lightning_muon.benchmarks.figure1 import markdown_tables
from tests.test_docs import _run_page

ROOT = Path(__file__).resolve().parents[2]


def test_diagnostics_howto_examples_run() -> None:
    _run_page(ROOT / "docs" / "how-to" / "diagnostics.md")


def test_figure1_page_numbers_match_the_script_output() -> None:
    """The tables on the Figure-1 page are those the script prints for the numbers it saved."""
    import json

    page = (ROOT / "docs" / "figure1.md").read_text(encoding="utf-8")
    result = json.loads((ROOT / "docs" / "img" / "figure1.json").read_text(encoding="utf-8"))
    assert (ROOT / "docs" / "img" / "figure1.png").read_bytes().startswith(b"\x89PNG")
    for line in markdown_tables(result).splitlines():
        assert line in page, line
