"""The bf16-vs-fp32 error table of docs/optimizers/index.md matches the ns_quality results it cites."""

import json
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
ROW = re.compile(r"^\| (jordan|you|polar_express) \| ([\d. /]+) \| ([\d. /]+) \|$", re.M)


def test_dtype_error_table_matches_the_benchmark_json():
    rows = json.loads((DOCS / "benchmarks" / "orthogonalizers.json").read_text())["rows"]
    errors = {
        (r["table"], r["dtype"]): [r["error"][k] for k in ("gaussian", "ill-conditioned", "low-rank")]
        for r in rows
        if r["steps"] == 5 and r["form"] == "auto"
    }
    found = ROW.findall((DOCS / "optimizers" / "index.md").read_text())
    assert {name for name, _, _ in found} == {"jordan", "you", "polar_express"}
    for name, fp32, bf16 in found:
        for dtype, cell in (("float32", fp32), ("bfloat16", bf16)):
            written = [float(v) for v in cell.split("/")]
            assert written == [round(e, 3) for e in errors[(name, dtype)]], (name, dtype)
