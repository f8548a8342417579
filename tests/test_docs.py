"""The documentation builds cleanly and its code examples run.

Conventions for the pages in ``EXECUTED_PAGES``:

* every fenced ```` ```python ```` block runs, top to bottom, in one namespace per page;
* a block preceded by the line ``<!-- skip -->`` is not run;
* a fenced ```` ```text ```` block preceded by the line ``<!-- output -->`` must equal what the
  python block just before it printed (trailing whitespace ignored), so pasted output cannot drift.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXECUTED_PAGES = sorted(
    [
        DOCS / "index.md",
        DOCS / "routing.md",
        DOCS / "how-to" / "structured-matrices.md",
        *(DOCS / "optimizers").glob("*.md"),
    ]
)
_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    """One fenced block of a page."""

    lang: str
    code: str
    line: int
    marker: str | None  # "skip" / "output" when the preceding non-blank line is such a comment


def parse_blocks(text: str) -> list[Block]:
    """The top-level fenced blocks of a markdown page, with the marker comment before each."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    previous = ""
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"unclosed code fence at line {start + 1}")
        marker = {"<!-- skip -->": "skip", "<!-- output -->": "output"}.get(previous)
        blocks.append(Block(match.group(1), "\n".join(body) + "\n", start + 1, marker))
        previous = ""
        i += 1
    return blocks


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def test_parse_blocks_markers() -> None:
    page = "<!-- skip -->\n```python\nraise SystemExit\n```\n\n```python\nprint(1)\n```\n<!-- output -->\n```text\n1\n```\n"
    blocks = parse_blocks(page)
    assert [(b.lang, b.marker) for b in blocks] == [
        ("python", "skip"),
        ("python", None),
        ("text", "output"),
    ]
    assert blocks[1].code == "print(1)\n"


@pytest.mark.parametrize("page", EXECUTED_PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(page: Path) -> None:
    """Run the page's python blocks in order; compare each ``<!-- output -->`` block."""
    import torch

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny examples: one thread avoids oversubscription on shared CPUs
    try:
        _run_page(page)
    finally:
        torch.set_num_threads(threads)


def _run_page(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    last_stdout: str | None = None
    ran = 0
    for block in parse_blocks(page.read_text(encoding="utf-8")):
        if block.lang == "python" and block.marker != "skip":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    exec(compile(block.code, f"{page.name}:{block.line}", "exec"), namespace)
                except Exception as err:
                    raise AssertionError(
                        f"{page.relative_to(ROOT)} line {block.line}: example failed: {err!r}"
                    ) from err
            last_stdout = out.getvalue()
            ran += 1
        elif block.marker == "output":
            assert last_stdout is not None, f"{page.name}:{block.line}: output block without code"
            assert _normalise(last_stdout) == _normalise(block.code), (
                f"{page.relative_to(ROOT)} line {block.line}: pasted output differs from what the "
                f"example prints:\n{last_stdout}"
            )
    assert ran > 0, f"{page.name} has no runnable python example"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` succeeds (no warnings: broken links, missing nav pages)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocs_jupyter")  # renders the notebook page (the docs extra)
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()
    # the notebook is a page of the site, rendered with the outputs saved in it
    notebook = (tmp_path / "site" / "notebooks" / "diagnostics" / "index.html").read_text("utf-8")
    assert notebook.count("data:image/png") >= 4
    assert "NorMuon  step 39: κ(ΔW)" in notebook
    assert not (ROOT / ".cache").exists()  # no build cache left in the working tree
