"""Generated blocks of documentation pages: the numbers a command writes into a page.

A page marks the part a command owns with two comments, ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``; :func:`replace_block` rewrites what lies between them and nothing else,
:func:`read_block` returns it (for tests that compare a page with the JSON its command wrote).

Example:
    >>> import tempfile, pathlib
    >>> page = pathlib.Path(tempfile.mkdtemp()) / "p.md"
    >>> _ = page.write_text("intro\\n<!-- t:start -->\\nold\\n<!-- t:end -->\\noutro\\n")
    >>> replace_block(page, "t", "| a |")
    >>> read_block(page, "t")
    '| a |'
    >>> page.read_text().splitlines()[0], page.read_text().splitlines()[-1]
    ('intro', 'outro')
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["markers", "read_block", "replace_block"]


def markers(name: str) -> tuple[str, str]:
    """The start and end comments of block ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _split(text: str, name: str, page: Path) -> tuple[str, str, str]:
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{page} needs exactly one {start} … {end} block")
    head, rest = text.split(start, 1)
    body, tail = rest.split(end, 1)
    return head, body, tail


def read_block(page: str | Path, name: str) -> str:
    """The text between the markers of block ``name`` (stripped of surrounding blank lines)."""
    page = Path(page)
    return _split(page.read_text(encoding="utf-8"), name, page)[1].strip("\n")


def replace_block(page: str | Path, name: str, block: str) -> None:
    """Replace the text between the markers of block ``name`` with ``block``."""
    page = Path(page)
    head, _, tail = _split(page.read_text(encoding="utf-8"), name, page)
    start, end = markers(name)
    page.write_text(f"{head}{start}\n{block.strip(chr(10))}\n{end}{tail}", encoding="utf-8")
