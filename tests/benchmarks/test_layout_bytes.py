"""The bytes-by-layout page is what its benchmark measures today (bytes do not depend on timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_muon.benchmarks import layout_bytes

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"


def test_page_and_json_match_a_fresh_measurement() -> None:
    fresh = layout_bytes.run()
    saved = json.loads((DOCS / "layout-bytes.json").read_text())
    assert fresh == saved
    command = (
        "python -m lightning_muon.benchmarks.layout_bytes --json docs/benchmarks/layout-bytes.json"
        " --markdown docs/benchmarks/layout-bytes.md"
    )
    assert (DOCS / "layout-bytes.md").read_text() == layout_bytes.markdown(fresh, command)
    # owner-computes at its minimum where every rank holds distinct rows; never below it
    assert fresh["FSDP2 (4×1)"]["matrix_bytes"] == fresh["FSDP2 (4×1)"]["minimum_bytes"]
    assert all(r["matrix_bytes"] >= r["minimum_bytes"] for r in fresh.values())
