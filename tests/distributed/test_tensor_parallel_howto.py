"""The tensor-parallel how-to's ``train_tp.py``, run as written (Lightning's launcher starts 4 gloo
CPU processes: ``ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=2)``)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_docs import parse_blocks

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HOWTO = ROOT / "docs" / "how-to" / "tensor-parallel.md"


def howto_script() -> str:
    blocks = [b for b in parse_blocks(HOWTO.read_text()) if b.code.startswith("# train_tp.py")]
    assert len(blocks) == 1, "the how-to must contain exactly one train_tp.py block"
    return blocks[0].code


@pytest.mark.parametrize("structure", ["flatten", "per-head"])
def test_howto_trains_on_a_two_by_two_mesh(tmp_path: Path, structure: str) -> None:
    script = tmp_path / "train_tp.py"
    script.write_text(howto_script())
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    path = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": path})
    args = ["12"] if structure == "flatten" else ["12", structure]
    run = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # the fused QKV weight is split over both mesh dimensions: tensor parallel rows, then FSDP2
    placements = re.search(r"attn\.qkv: \((\d+), (\d+)\) as \[(.*)\]", run.stdout)
    assert placements, run.stdout
    assert placements.group(3) == "'_S(0, 2)', 'S(0)'", placements.group(0)
    loss = re.search(r"val_loss ([\d.]+) after 12 steps", run.stdout)
    assert loss, run.stdout
    assert float(loss.group(1)) < math.log(256) - 1.0  # it learned from the bytes
