"""``ByteCorpusDataModule``: a byte-level language-modelling corpus as a Lightning data module.

Example:
    >>> from lightning_muon.data import ByteCorpusDataModule
    >>> dm = ByteCorpusDataModule(block_size=32, batch_size=4, max_bytes=50_000)
    >>> dm.setup("fit")
    >>> x, y = next(iter(dm.train_dataloader()))
    >>> x.shape, x.dtype, int(x.max()) < dm.vocab_size
    (torch.Size([4, 32]), torch.int64, True)
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from lightning_muon.data.corpus import VOCAB_SIZE, CorpusError, load_corpus, split_corpus
from lightning_muon.data.windows import FixedWindows, RandomWindowBatches, ResumableLoader


class ByteCorpusDataModule(pl.LightningDataModule):
    """Next-byte prediction on the Python standard library's source or on a folder of text files.

    Training batches are windows at seeded random offsets of the training split (see
    :class:`~lightning_muon.data.windows.RandomWindowBatches`); one epoch is
    ``len(train_tokens) // (block_size · batch_size · world_size)`` batches per rank, i.e. about one
    pass over the training bytes. Validation uses the fixed, non-overlapping windows of the
    validation split. The training loader is resumable mid-epoch, so checkpoints restore the
    exact data position.

    Args:
        data_dir: Folder of text files (or one text file). ``None``: the Python standard library's
            own ``.py`` sources.
        block_size: Tokens per example (model context length).
        batch_size: Examples per batch (per device).
        val_fraction: Fraction of the corpus held out for validation, in (0, 1).
        max_bytes: Cap on the corpus size in bytes; ``None`` reads everything.
        num_workers: ``DataLoader`` worker processes.
        seed: Seed of the split and of the training window offsets.
        max_val_windows: Use at most this many validation windows (``None``: all).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        block_size: int = 128,
        batch_size: int = 16,
        val_fraction: float = 0.05,
        max_bytes: int | None = 4_000_000,
        num_workers: int = 0,
        seed: int = 0,
        max_val_windows: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("block_size", block_size), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}.")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer or None, got {max_bytes!r}.")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers!r}.")
        if max_val_windows is not None and max_val_windows < 1:
            raise ValueError(f"max_val_windows must be positive or None, got {max_val_windows!r}.")
        if data_dir is not None and not Path(data_dir).expanduser().exists():
            raise CorpusError(f"data_dir={data_dir!r} does not exist.")
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.max_bytes = max_bytes
        self.num_workers = num_workers
        self.seed = seed
        self.max_val_windows = max_val_windows
        self.vocab_size = VOCAB_SIZE
        self.train_tokens: torch.Tensor | None = None
        self.val_tokens: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        """Read the corpus and split it (once)."""
        if self.train_tokens is not None:
            return
        tokens = load_corpus(self.data_dir, max_bytes=self.max_bytes)
        train, val = split_corpus(tokens, self.val_fraction, seed=self.seed)
        for what, stream in (("training", train), ("validation", val)):
            if stream.numel() < self.block_size + 1:
                raise CorpusError(
                    f"The {what} split has {stream.numel()} bytes, fewer than block_size + 1 = "
                    f"{self.block_size + 1} (data_dir={self.data_dir!r}, "
                    f"max_bytes={self.max_bytes!r}, val_fraction={self.val_fraction!r})."
                )
        self.train_tokens, self.val_tokens = train, val

    def _rank_and_world(self) -> tuple[int, int]:
        """This process's data-parallel rank and their number: the strategy's sampler settings
        (``ModelParallelStrategy``: the ``data_parallel`` mesh dimension, so the tensor-parallel
        ranks of one replica read the same batches), else the global rank and world size."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        sampler = getattr(trainer.strategy, "distributed_sampler_kwargs", None)
        if sampler:
            return int(sampler["rank"]), int(sampler["num_replicas"])
        return trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> ResumableLoader:
        """Random-offset training batches, resumable mid-epoch, distinct per data-parallel rank."""
        self.setup("fit")
        assert self.train_tokens is not None
        rank, world = self._rank_and_world()
        per_epoch = self.train_tokens.numel() // (self.block_size * self.batch_size * world)
        dataset = RandomWindowBatches(
            self.train_tokens,
            block_size=self.block_size,
            batch_size=self.batch_size,
            batches_per_epoch=max(1, per_epoch),
            seed=self.seed,
            rank=rank,
            world_size=world,
        )
        return ResumableLoader(
            dataset, num_workers=self.num_workers, persistent_workers=False, pin_memory=False
        )

    def val_dataloader(self) -> DataLoader:
        """Fixed validation windows, in order."""
        self.setup("validate")
        assert self.val_tokens is not None
        dataset = FixedWindows(self.val_tokens, self.block_size, self.max_val_windows)
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers
        )
