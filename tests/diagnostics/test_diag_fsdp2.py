"""FSDP2 with 2 gloo processes: row statistics from local shards, spectra from gathered matrices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("fsdp2_monitors.py")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not dist.is_available(), reason="torch built without distributed")
def test_monitors_under_fsdp2(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, str(SCRIPT), str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["placements"] == {
        "fc1.weight": "(Shard(dim=0),)",
        "fc2.weight": "(Shard(dim=0),)",
    }
    assert result["local_rows"] == 13  # 25 rows split 13 + 12
    assert result["gathered_rows_error"] < 1e-6

    assert {(u["step"], u["param"]) for u in result["updates"]} == {
        (s, p) for s in (1, 3) for p in ("fc1.weight", "fc2.weight")
    }
    for u in result["updates"]:
        assert len(u["rows"]) == len(u["oracle"]) == (25 if u["param"] == "fc1.weight" else 16)
        assert u["rows"] == pytest.approx(u["oracle"], rel=1e-4, abs=1e-8)
        assert u["ratio"] == pytest.approx(u["oracle_ratio"], rel=1e-5)
    seen = {(s["param"], s["source"]) for s in result["spectra"]}
    # NorMuon orthogonalizes fc1 only (fc2 is the output layer): its direction is a gathered DTensor
    assert seen == {("fc1.weight", "direction")} | {
        (p, s) for p in ("fc1.weight", "fc2.weight") for s in ("update", "momentum", "weight")
    }
    for s in result["spectra"]:
        assert len(s["sv"]) == 16
        if s["oracle"] is not None:
            assert s["sv"] == pytest.approx(s["oracle"], rel=1e-4, abs=1e-7)
        if s["source"] == "direction":  # the Newton–Schulz band of the whole matrix
            assert 0.6 < min(s["sv"]) and max(s["sv"]) < 1.25
            assert s["orthogonality_error"] < 0.35
