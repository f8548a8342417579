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
    # owner-computes at its minimum where every rank holds distinct rows or a replica; never below
    # it, except where replicas update their blocks themselves (no transfer, repeated compute)
    for layout in ("FSDP2 (4×1)", "DDP (replicas)", "HSDP (2 replicas × 2 shards)"):
        assert fresh[layout]["matrix_bytes"] == fresh[layout]["minimum_bytes"], layout
    assert all(
        r["matrix_bytes"] >= r["minimum_bytes"]
        for k, r in fresh.items()
        if k != "DDP, per-head blocks"
    )
    # DDP with per-head blocks: the fused QKV weights (2 layers × 8192 elements) are not shared
    shared_qkv = 2 * (8 + 2 * 4) * 8 * 64 * 3 * 4  # to 3 other ranks, 4 bytes
    ddp, heads = fresh["DDP (replicas)"], fresh["DDP, per-head blocks"]
    assert ddp["matrix_bytes"] - heads["matrix_bytes"] == shared_qkv
    # per-head blocks under tensor parallelism: every head lies whole on one rank, so the fused
    # QKV weights move nothing, where whole they move the 3/4 each rank lacks to the owner and
    # back: 2 layers × 1.5 × (8 + 2·4)·8 × 64 elements of 4 bytes; everything else as before
    qkv_bytes = 2 * 3 * (8 + 2 * 4) * 8 * 64 * 4 // 2
    for mesh in ("TP (1×4)", "FSDP2 × TP (2×2)"):
        heads = fresh[f"{mesh}, per-head blocks"]
        assert fresh[mesh]["matrix_bytes"] - heads["matrix_bytes"] == qkv_bytes
        assert fresh[mesh]["minimum_bytes"] - heads["minimum_bytes"] == qkv_bytes
