"""The diagnostics notebook in docs/ runs headless from top to bottom, draws its figures, and the
outputs saved in it (which the site shows) are what it prints today.

Regenerate the saved outputs after a change with::

    python -m jupyter nbconvert --to notebook --execute --inplace docs/notebooks/diagnostics.ipynb
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "notebooks" / "diagnostics.ipynb"


def _streams(nb, name: str) -> list[str]:
    return [
        "".join(o.get("text", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.output_type == "stream" and o.get("name") == name
    ]


def _images(nb) -> int:
    return sum(
        "image/png" in o.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
    )


def test_saved_outputs_are_clean() -> None:
    """The page shows figures and numbers, no warnings or paths of the machine that ran it."""
    nbformat = pytest.importorskip("nbformat")
    saved = nbformat.read(NOTEBOOK, as_version=4)
    assert _images(saved) == 4  # norms, spectra, history, comparison
    assert _streams(saved, "stderr") == []
    assert all(
        o.output_type != "error"
        for cell in saved.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
    )


@pytest.mark.slow
def test_diagnostics_notebook_executes_and_matches_its_saved_outputs() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("litgpt")
    saved = nbformat.read(NOTEBOOK, as_version=4)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert _images(nb) == 4
    printed = "".join(_streams(nb, "stdout"))
    assert "AdamW    step 39: κ(ΔW)" in printed and "NorMuon  step 39: κ(ΔW)" in printed
    assert _streams(nb, "stdout") == _streams(saved, "stdout"), (
        "the notebook's saved outputs are stale; regenerate them (see this module's docstring)"
    )
    assert _streams(nb, "stderr") == []
