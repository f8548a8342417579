"""Training and validation windows over a byte stream, with a resumable training loader.

A language-model example is a window ``w = tokens[o : o + block_size + 1]`` split into the input
``x = w[:-1]`` and the next-token target ``y = w[1:]``.

* Training (:class:`RandomWindowBatches`): batch ``j`` of epoch ``e`` on rank ``r`` holds
  ``batch_size`` windows at offsets drawn uniformly from ``[0, len(tokens) - block_size - 1]`` by
  a generator seeded with ``(seed, e, r, j)``. Batches are therefore a pure function of their
  coordinates: the same for any number of loader workers, and reproducible after a restart.
* Validation (:class:`FixedWindows`): the non-overlapping windows at offsets
  ``0, block_size, 2·block_size, ...``, always the same.
* :class:`ResumableLoader` remembers ``(epoch, batches yielded)`` through
  ``state_dict()``/``load_state_dict()``; Lightning stores it in checkpoints and restores it, so a
  run resumed mid-epoch continues with exactly the batches it would have seen.

Example:
    >>> import torch
    >>> tokens = torch.arange(200, dtype=torch.uint8)
    >>> batches = RandomWindowBatches(tokens, block_size=8, batch_size=4, batches_per_epoch=3)
    >>> x, y = next(iter(ResumableLoader(batches)))
    >>> x.shape, bool((y[:, :-1] == x[:, 1:]).all())
    (torch.Size([4, 8]), True)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

_MASK64 = (1 << 63) - 1


def _mix_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed (SplitMix64-style), independent of ``hash()``."""
    state = 0x9E3779B97F4A7C15
    for part in parts:
        state = (state ^ (part & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & _MASK64
        state ^= state >> 29
    return state


def _check_stream(tokens: torch.Tensor, block_size: int, what: str) -> None:
    if block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
    if tokens.ndim != 1 or tokens.numel() < block_size + 1:
        raise ValueError(
            f"The {what} stream has {tokens.numel()} tokens; a window needs block_size + 1 = "
            f"{block_size + 1}. Use a larger corpus (max_bytes) or a smaller block_size."
        )


class RandomWindowBatches(IterableDataset):
    """Batches of windows at random offsets; batch ``j`` of epoch ``e`` on rank ``r`` is seeded by
    ``(seed, e, r, j)``.

    Args:
        tokens: 1-D tensor of token ids.
        block_size: Window length (model context).
        batch_size: Windows per batch.
        batches_per_epoch: Batches per epoch on each rank.
        seed: Base seed.
        rank: This process's data-parallel rank.
        world_size: Number of data-parallel ranks.

    Set :attr:`epoch` and :attr:`start_batch` before iterating (done by :class:`ResumableLoader`).
    Worker ``w`` of ``W`` produces batches ``start_batch + w, start_batch + w + W, ...`` which the
    ``DataLoader`` interleaves round-robin back into order.
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        block_size: int,
        batch_size: int,
        batches_per_epoch: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_stream(tokens, block_size, "training")
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if batches_per_epoch < 1:
            raise ValueError(
                f"batches_per_epoch must be a positive integer, got {batches_per_epoch!r}."
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank!r} must lie in [0, world_size={world_size!r}).")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return batch ``index`` of ``epoch`` as ``(x, y)`` int64 tensors of shape (B, T)."""
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, epoch, self.rank, index))
        high = self.tokens.numel() - self.block_size
        offsets = torch.randint(0, high, (self.batch_size,), generator=generator)
        span = torch.arange(self.block_size + 1)
        windows = self.tokens[offsets[:, None] + span].long()
        return windows[:, :-1], windows[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for index in range(self.start_batch + worker, self.batches_per_epoch, workers):
            yield self.batch(self.epoch, index)


class FixedWindows(Dataset):
    """Non-overlapping windows at offsets ``0, block_size, 2·block_size, ...`` (validation).

    Args:
        tokens: 1-D tensor of token ids.
        block_size: Window length.
        max_windows: Keep only the first ``max_windows`` windows (``None``: all).
    """

    def __init__(
        self, tokens: torch.Tensor, block_size: int, max_windows: int | None = None
    ) -> None:
        _check_stream(tokens, block_size, "validation")
        self.tokens = tokens
        self.block_size = block_size
        count = (tokens.numel() - 1) // block_size
        self.count = count if max_windows is None else min(count, max_windows)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        start = index * self.block_size
        window = self.tokens[start : start + self.block_size + 1].long()
        return window[:-1], window[1:]


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over :class:`RandomWindowBatches` that can resume mid-epoch.

    ``state_dict()`` returns ``{"epoch": e, "position": n}``: ``n`` batches of epoch ``e`` have been
    handed out. ``load_state_dict()`` makes the next iteration start at batch ``n`` of epoch ``e``.
    Each full pass advances the epoch, so successive epochs draw different windows.
    """

    def __init__(self, dataset: RandomWindowBatches, **kwargs: Any) -> None:
        kwargs.setdefault("batch_size", None)
        super().__init__(dataset, **kwargs)
        self._epoch = 0
        self._position = 0

    def __iter__(self) -> Iterator[Any]:
        dataset: RandomWindowBatches = self.dataset  # type: ignore[assignment]
        if self._position >= dataset.batches_per_epoch:
            self._epoch, self._position = self._epoch + 1, 0
        dataset.epoch, dataset.start_batch = self._epoch, self._position
        for batch in super().__iter__():
            self._position += 1
            yield batch
        self._epoch, self._position = self._epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        """Where the stream stands: ``{"epoch": e, "position": batches handed out in e}``."""
        return {"epoch": self._epoch, "position": self._position}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Continue from a state returned by :meth:`state_dict`."""
        self._epoch = int(state_dict["epoch"])
        self._position = int(state_dict["position"])
