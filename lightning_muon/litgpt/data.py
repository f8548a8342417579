"""``StdlibText``: litgpt pretraining data from the standard library's source (or a text folder), offline.

A litgpt :class:`~litgpt.data.DataModule` over :mod:`lightning_muon.data`'s corpus: the bytes of
the Python standard library's ``.py`` files (or of a folder of text files), split into disjoint
train and validation streams, tokenized with the tokenizer litgpt passes in ``connect``. With the
byte tokenizer of :mod:`lightning_muon.litgpt.tokenizer` (id = byte) the bytes are the tokens; any
other tokenizer encodes the text in newline-aligned pieces. Training batches are windows of
``max_seq_length + 1`` tokens at seeded random offsets, distinct per data-parallel rank and
resumable (:class:`~lightning_muon.data.windows.RandomWindowBatches`); validation uses fixed
non-overlapping windows.

Bad input fails before training: a ``data_dir`` that does not exist (at construction), and a
tokenizer whose ids do not fit the model's embedding (``padded_vocab_size``, when given).

Example (YAML of ``litgpt pretrain``; the anchor keeps one vocabulary size for model, optimizer
and data)::

    model_config: {padded_vocab_size: &vocab 256, ...}
    data:
      class_path: lightning_muon.litgpt.StdlibText
      init_args: {max_bytes: 4000000, padded_vocab_size: *vocab}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from litgpt.data import DataModule
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader

from lightning_muon.data.corpus import VOCAB_SIZE, decode, load_corpus, split_corpus
from lightning_muon.data.windows import FixedWindows, RandomWindowBatches, ResumableLoader

from .tokenizer import bytes_to_unicode

_PIECE_CHARS = 1 << 16


def is_byte_tokenizer(tokenizer: Tokenizer | None) -> bool:
    """Whether ``tokenizer`` maps every byte to its own value (no tokenizer: raw bytes, too).

    True for a Hugging Face BPE with no merges, a ``ByteLevel`` pre-tokenizer and the vocabulary
    ``{bytes_to_unicode()[b]: b}``: the tokenizer :mod:`lightning_muon.litgpt.tokenizer` writes.
    """
    if tokenizer is None:
        return True
    if tokenizer.backend != "huggingface":
        return False
    spec = json.loads(tokenizer.processor.to_str())
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    return (
        model.get("type") == "BPE"
        and not model.get("merges")
        and pre.get("type") == "ByteLevel"
        and not pre.get("add_prefix_space", False)
        and not spec.get("added_tokens")
        and model.get("vocab") == {c: b for b, c in bytes_to_unicode().items()}
    )


def tokenizer_size(tokenizer: Tokenizer | None) -> int:
    """One more than the largest id ``tokenizer`` can produce (256 for raw bytes)."""
    if tokenizer is None:
        return VOCAB_SIZE
    size = tokenizer.vocab_size
    if tokenizer.backend == "huggingface":
        size = max(size, tokenizer.processor.get_vocab_size(with_added_tokens=True))
    for special in (tokenizer.bos_id, tokenizer.eos_id):
        if special is not None:
            size = max(size, special + 1)
    return size


def encode_text(tokenizer: Tokenizer | None, data: torch.Tensor) -> torch.Tensor:
    """Token ids of the byte stream ``data`` (the bytes themselves for a byte tokenizer)."""
    if is_byte_tokenizer(tokenizer):
        return data.long()
    text = decode(data)
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n", start + _PIECE_CHARS)
        end = len(text) if end < 0 else end + 1
        pieces.append(text[start:end])
        start = end
    if tokenizer.backend == "huggingface":
        ids = [i for enc in tokenizer.processor.encode_batch(pieces) for i in enc.ids]
    else:
        ids = [i for piece in pieces for i in tokenizer.processor.encode(piece)]
    return torch.tensor(ids, dtype=torch.long)


class _TrainWindows(RandomWindowBatches):
    """Rank ``r``'s rows ``[r·B, (r+1)·B)`` of global batch ``(epoch, index)`` of ``W·B`` windows.

    Batches are litgpt's ``(B, T + 1)`` windows (input and shifted target). Slicing one global
    batch (rather than seeding each rank) makes a step's data independent of how the global batch
    is split: 2 devices × B sees exactly what 1 device × 2B sees.
    """

    def __init__(self, tokens: torch.Tensor, block_size: int, batch_size: int, batches_per_epoch: int,
                 seed: int, rank: int, world_size: int) -> None:  # fmt: skip
        super().__init__(tokens, block_size, batch_size * world_size, batches_per_epoch, seed)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank!r} must lie in [0, world_size={world_size!r}).")
        self.rows = slice(rank * batch_size, (rank + 1) * batch_size)

    def batch(self, epoch: int, index: int) -> torch.Tensor:  # type: ignore[override]
        x, y = super().batch(epoch, index)
        return torch.cat([x[self.rows], y[self.rows, -1:]], dim=1)


class _ValWindows(FixedWindows):
    def __getitem__(self, index: int) -> torch.Tensor:  # type: ignore[override]
        x, y = super().__getitem__(index)
        return torch.cat([x, y[-1:]])


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@dataclass
class StdlibText(DataModule):
    """Pretraining text: the standard library's ``.py`` sources (default) or a folder of text files."""

    data_dir: Path | None = None
    """Folder (or file) of text; ``None`` reads the running interpreter's standard library."""
    max_bytes: int | None = 4_000_000
    """Read at most this many bytes of text (``None``: all of it)."""
    val_fraction: float = 0.05
    """Fraction of the text held out for validation, in (0, 1)."""
    seed: int = 42
    """Seed of the train/validation split and of the training window offsets."""
    num_workers: int = 0
    """``DataLoader`` worker processes."""
    padded_vocab_size: int | None = None
    """The model's ``padded_vocab_size``: a tokenizer with larger ids is refused before training."""
    max_val_windows: int | None = 512
    """Use at most this many validation windows (``None``: all)."""

    tokenizer: Tokenizer | None = field(default=None, init=False, repr=False)
    batch_size: int = field(default=1, init=False, repr=False)
    max_seq_length: int = field(default=-1, init=False, repr=False)
    train_tokens: torch.Tensor | None = field(default=None, init=False, repr=False)
    val_tokens: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__init__()
        if self.data_dir is not None and not Path(self.data_dir).expanduser().exists():
            raise ValueError(
                f"StdlibText: data_dir={str(self.data_dir)!r} does not exist (omit data_dir to "
                "train on the Python standard library's source)."
            )
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(
                f"StdlibText: max_bytes must be positive or None, got {self.max_bytes!r}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(
                f"StdlibText: val_fraction must lie in (0, 1), got {self.val_fraction!r}"
            )
        if self.padded_vocab_size is not None and self.padded_vocab_size < 1:
            raise ValueError(
                f"StdlibText: padded_vocab_size must be positive or None, got {self.padded_vocab_size!r}"
            )

    def connect(
        self,
        tokenizer: Tokenizer | None = None,
        batch_size: int = 1,
        max_seq_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Take litgpt's tokenizer, micro-batch size and context length; check the vocabulary fits."""
        if max_seq_length is None or max_seq_length < 1:
            raise ValueError(f"StdlibText: max_seq_length must be positive, got {max_seq_length!r}")
        size = tokenizer_size(tokenizer)
        if self.padded_vocab_size is not None and size > self.padded_vocab_size:
            where = (
                "raw bytes" if tokenizer is None else f"the tokenizer in {tokenizer.model_name!r}"
            )
            raise ValueError(
                f"StdlibText: {where} has {size} token ids but the model's padded_vocab_size is "
                f"{self.padded_vocab_size}: set model_config.padded_vocab_size (and the optimizer's "
                f"vocab_size) to at least {size}, or use a smaller tokenizer."
            )
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length

    def setup(self, stage: str = "") -> None:
        """Read, tokenize and split the corpus (once)."""
        if self.train_tokens is not None:
            return
        ids = encode_text(self.tokenizer, load_corpus(self.data_dir, max_bytes=self.max_bytes))
        if (
            self.padded_vocab_size is not None
            and ids.numel()
            and int(ids.max()) >= self.padded_vocab_size
        ):
            raise ValueError(
                f"StdlibText: token id {int(ids.max())} does not fit padded_vocab_size={self.padded_vocab_size}"
            )
        train, val = split_corpus(ids, self.val_fraction, seed=self.seed)
        for what, stream in (("training", train), ("validation", val)):
            if stream.numel() < self.max_seq_length + 1:
                raise ValueError(
                    f"StdlibText: the {what} split has {stream.numel()} tokens, fewer than "
                    f"max_seq_length + 1 = {self.max_seq_length + 1}; raise max_bytes or val_fraction."
                )
        self.train_tokens, self.val_tokens = train, val

    def train_dataloader(self) -> DataLoader:
        """Random-offset ``(micro_batch_size, max_seq_length + 1)`` windows: this rank's rows of each global batch."""
        self.setup()
        assert self.train_tokens is not None
        rank, world = _rank_and_world()
        per_epoch = self.train_tokens.numel() // (self.max_seq_length * self.batch_size * world)
        windows = _TrainWindows(
            self.train_tokens,
            block_size=self.max_seq_length,
            batch_size=self.batch_size,
            batches_per_epoch=max(1, per_epoch),
            seed=self.seed,
            rank=rank,
            world_size=world,
        )
        return ResumableLoader(windows, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        """The fixed, non-overlapping validation windows, in order (Fabric shares them out over ranks)."""
        self.setup()
        assert self.val_tokens is not None
        windows = _ValWindows(self.val_tokens, self.max_seq_length, self.max_val_windows)
        return DataLoader(
            windows, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers
        )
