"""The runnable examples in the diagnostics docstrings stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "lightning_muon.diagnostics",
    "lightning_muon.diagnostics.matrix",
    "lightning_muon.diagnostics.rows",
    "lightning_muon.diagnostics.spectrum",
    "lightning_muon.diagnostics.history",
    "lightning_muon.diagnostics.distributed",
    "lightning_muon.diagnostics.plotting",
    "lightning_muon.diagnostics.checkpoint",
    "lightning_muon.callbacks",
    "lightning_muon.callbacks._selection",
    "lightning_muon.callbacks._media",
    "lightning_muon.benchmarks.pages",
    "lightning_muon.callbacks.update_norm",
    "lightning_muon.callbacks.spectrum",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
