"""Byte-level text corpora: the Python standard library's own source, or any folder of text.

The built-in corpus is the ``.py`` source of the standard library of the running interpreter
(``sysconfig.get_paths()["stdlib"]``), so every machine that runs Python has it. Files are read
depth first, the entries of each directory in name order, which makes the corpus a pure function
of the interpreter's installation and the byte cap (and lets a cap stop the walk early). Tokens are raw bytes: the vocabulary has exactly
:data:`VOCAB_SIZE` = 256 symbols and needs no tokenizer.

The train/validation split cuts the byte stream into ``num_chunks`` contiguous chunks and sends a
seeded random subset of ``max(1, round(val_fraction * num_chunks))`` chunks to validation, so both
splits cover the whole corpus (not just the alphabetically last modules) and never overlap.

Example:
    >>> from lightning_muon.data.corpus import load_corpus, split_corpus, VOCAB_SIZE
    >>> tokens = load_corpus(max_bytes=100_000)
    >>> tokens.dtype, tokens.numel(), VOCAB_SIZE
    (torch.uint8, 100000, 256)
    >>> train, val = split_corpus(tokens, val_fraction=0.1, seed=0)
    >>> train.numel() + val.numel()
    100000
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

VOCAB_SIZE = 256
"""Number of distinct tokens of the byte-level encoding."""

STDLIB_EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)
"""Directory names skipped in the standard library: installed third-party packages (they differ
between machines) and the test suites (full of deliberately malformed and non-UTF-8 data)."""

_SNIFF_BYTES = 8192


class CorpusError(ValueError):
    """A data path that does not exist, holds no text, or is too small for the requested split."""


def stdlib_dir() -> Path:
    """Return the directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _walk_sorted(folder: Path, skip_dirs: frozenset[str]) -> Iterator[Path]:
    """Files under ``folder``, depth first, entries of each directory in name order.

    Hidden entries (``.name``) and directories named in ``skip_dirs`` are skipped; symbolic links
    to directories are not followed. The walk is lazy, so a byte cap stops it early.
    """
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in skip_dirs:
                yield from _walk_sorted(Path(entry.path), skip_dirs)
        elif entry.is_file():
            yield Path(entry.path)


def stdlib_source_files() -> Iterator[Path]:
    """The standard library's ``.py`` files, in deterministic order (see :func:`_walk_sorted`).

    Directories named in :data:`STDLIB_EXCLUDED_DIRS` are skipped at any depth.
    """
    for path in _walk_sorted(stdlib_dir(), STDLIB_EXCLUDED_DIRS):
        if path.suffix == ".py":
            yield path


def text_files(folder: str | Path) -> Iterator[Path]:
    """The text files under ``folder`` (recursively), in deterministic order.

    A file counts as text when its first 8 KiB contain no NUL byte; hidden files and directories
    (names starting with ``.``) are skipped. ``folder`` may also be a single file.

    Raises:
        CorpusError: ``folder`` does not exist.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise CorpusError(f"data_dir={str(folder)!r} does not exist.")
    candidates = [root] if root.is_file() else _walk_sorted(root, frozenset())
    return (path for path in candidates if _looks_like_text(path))


def _looks_like_text(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    return len(head) > 0 and b"\x00" not in head


def read_bytes(files: Iterable[Path], max_bytes: int | None = None) -> bytes:
    """Concatenate the bytes of ``files`` in order, stopping at exactly ``max_bytes`` bytes.

    Files that are not valid UTF-8 are skipped, so the result always decodes as UTF-8 except
    possibly for a multi-byte character cut by the cap.
    """
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive integer or None, got {max_bytes!r}.")
    pieces: list[bytes] = []
    total = 0
    for path in files:
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if max_bytes is not None and total + len(data) >= max_bytes:
            pieces.append(data[: max_bytes - total])
            total = max_bytes
            break
        pieces.append(data)
        total += len(data)
    return b"".join(pieces)


def load_corpus(data_dir: str | Path | None = None, max_bytes: int | None = None) -> torch.Tensor:
    """Load a corpus as a 1-D ``torch.uint8`` tensor of byte tokens.

    Args:
        data_dir: A folder of text files (or one text file). ``None`` selects the Python standard
            library's own source files.
        max_bytes: Cap on the corpus size in bytes (``None``: no cap).

    Raises:
        CorpusError: ``data_dir`` does not exist or holds no text.
        ValueError: ``max_bytes`` is not positive.
    """
    if data_dir is None:
        files = stdlib_source_files()
        where = f"the Python standard library at {stdlib_dir()}"
    else:
        files = text_files(data_dir)
        where = f"data_dir={str(data_dir)!r}"
    data = read_bytes(files, max_bytes=max_bytes)
    if not data:
        raise CorpusError(
            f"{where} contains no UTF-8 text files (looked for files without NUL bytes "
            "that decode as UTF-8)."
        )
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def split_corpus(
    tokens: torch.Tensor, val_fraction: float, seed: int = 0, num_chunks: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a token stream into disjoint train and validation streams, deterministically.

    The stream is cut into ``min(num_chunks, len(tokens))`` contiguous chunks of (almost) equal
    size; ``k = max(1, round(val_fraction * chunks))`` of them, drawn with a generator seeded by
    ``seed``, are concatenated (in corpus order) into the validation stream, the rest into the
    training stream.

    Args:
        tokens: 1-D token tensor.
        val_fraction: Fraction of the chunks held out, in the open interval (0, 1).
        seed: Seed of the chunk draw.
        num_chunks: Number of chunks to cut the stream into.

    Returns:
        ``(train_tokens, val_tokens)``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}.")
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}.")
    chunks = min(num_chunks, tokens.numel())
    if chunks < 2:
        raise ValueError(f"Cannot split a corpus of {tokens.numel()} tokens into train and val.")
    num_val = min(chunks - 1, max(1, round(val_fraction * chunks)))
    generator = torch.Generator().manual_seed(seed)
    is_val = torch.zeros(chunks, dtype=torch.bool)
    is_val[torch.randperm(chunks, generator=generator)[:num_val]] = True
    pieces = torch.tensor_split(tokens, chunks)
    train = torch.cat([piece for piece, v in zip(pieces, is_val.tolist(), strict=True) if not v])
    val = torch.cat([piece for piece, v in zip(pieces, is_val.tolist(), strict=True) if v])
    return train, val


def decode(tokens: torch.Tensor | Iterable[int]) -> str:
    """Turn byte tokens back into text (invalid UTF-8 sequences become U+FFFD)."""
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.flatten().tolist()
    return bytes(tokens).decode("utf-8", errors="replace")
