"""The diagnostics notebook in docs/ runs headless from top to bottom and draws its figures."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "notebooks" / "diagnostics.ipynb"


@pytest.mark.slow
def test_diagnostics_notebook_executes() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("litgpt")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # norms, spectra, history, comparison
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "AdamW    step 40: κ(ΔW)" in printed and "NorMuon  step 40: κ(ΔW)" in printed
