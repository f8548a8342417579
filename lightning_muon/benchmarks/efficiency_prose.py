"""The words of the generated efficiency pages, written against the numbers of the benchmark's JSON.

Each text takes its numbers from the JSON (``prose(data)``), so a rerun of the benchmark changes
the numbers on the page and the tests notice when the words no longer fit them.
"""

from __future__ import annotations

from typing import Any


def prose(data: dict[str, Any]) -> dict[str, str]:
    """Section name → text (see :func:`lightning_muon.benchmarks.efficiency_page.render`)."""
    return {}
