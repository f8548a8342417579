"""The optimizers' defaults are the benchmark's measured defaults, and their docstrings cite its data.

The efficiency benchmark runs each default setting with explicit kwargs
(``efficiency_config.DEFAULTS``); these tests fail when a constructor default moves away from
what was measured, or when a docstring's cited share of AdamW's steps no longer matches
``docs/benchmarks/efficiency-cpu.json``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from lightning_muon.benchmarks.efficiency_config import DEFAULTS
from lightning_muon.optim.registry import get_optimizer_class

JSON = Path(__file__).resolve().parents[2] / "docs" / "benchmarks" / "efficiency-cpu.json"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_constructor_defaults_are_the_measured_ones(name):
    lr, kwargs = DEFAULTS[name]
    params = inspect.signature(get_optimizer_class(name)).parameters
    assert params["lr"].default == pytest.approx(lr)
    for key, value in kwargs.items():
        assert params[key].default == value, (name, key)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_docstring_cites_the_benchmark(name):
    rows = {r["label"]: r for r in json.loads(JSON.read_text())["table"]}
    measured, tuned = rows[f"{name} (defaults)"], rows[name]
    f = measured["fraction"]
    cited = f"{_pct(f['mean'])} [{_pct(f['min'])[:-1]}–{_pct(f['max'])[:-1]}]"
    doc = inspect.getdoc(get_optimizer_class(name))
    assert cited in doc, (name, cited)
    assert _pct(tuned["fraction"]["mean"]) in doc, (name, "best cell")


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_paper_settings_construct_and_differ(name):
    import torch

    cls = get_optimizer_class(name)
    assert cls.paper_settings and cls.paper_source
    W = torch.nn.Parameter(torch.randn(8, 4))
    opt = cls([{"params": [W], "branch": "muon"}], **cls.paper_settings)
    group = opt.param_groups[0]
    assert all(group[k] == v for k, v in cls.paper_settings.items() if k in group)
    assert group["lr"] != DEFAULTS[name][0]


PAGES = {"muon": "muon.md", "normuon": "normuon.md", "adamuon": "adamuon.md",
         "muon_nsr": "muon-nsr-vs.md", "muon_vs": "muon-nsr-vs.md"}  # fmt: skip
OPTIMIZER_DOCS = JSON.parents[1] / "optimizers"


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_optimizer_pages_state_the_defaults_and_their_data(name):
    """The index table's lr / scale / ratio columns are the constructor's; the page cites the JSON."""
    cls = get_optimizer_class(name)
    params = inspect.signature(cls).parameters
    row = next(
        line for line in (OPTIMIZER_DOCS / "index.md").read_text().splitlines()
        if line.startswith(f"| `{cls.__name__}` |")
    )  # fmt: skip
    cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
    lr, scale, ratio = cells[5:8]
    assert float(lr) == pytest.approx(params["lr"].default)
    assert scale == params["scale"].default
    assert float(ratio) == params["adamw_lr_ratio"].default
    rows = {r["label"]: r for r in json.loads(JSON.read_text())["table"]}
    share = _pct(rows[f"{name} (defaults)"]["fraction"]["mean"])
    assert share in (OPTIMIZER_DOCS / PAGES[name]).read_text(), (name, share)
