"""Tensor helpers of the matrix engine: DTensor shards, state dtypes and matrix views.

Example:
    >>> import torch
    >>> matrix_shape((16, 3, 3, 3))
    (16, 27)
    >>> state_dtype(torch.zeros(2, dtype=torch.bfloat16))
    torch.float32
    >>> as_rows(torch.zeros(4, 2, 3), 4).shape
    torch.Size([4, 6])
"""

from __future__ import annotations

import math

import torch


def is_dtensor(t: torch.Tensor) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (checked by duck type, no distributed import)."""
    return hasattr(t, "to_local") and hasattr(t, "placements")


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor, or the tensor itself."""
    return t.to_local() if is_dtensor(t) else t


def state_dtype(p: torch.Tensor) -> torch.dtype:
    """Optimizer-state dtype of a parameter: fp32, or fp64 for fp64 parameters (never bf16/fp16)."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def state_zeros(p: torch.Tensor) -> torch.Tensor:
    """A zero state tensor shaped like ``p`` in :func:`state_dtype` (a DTensor for a DTensor ``p``)."""
    return torch.zeros_like(p, dtype=state_dtype(p), memory_format=torch.contiguous_format)


def matrix_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """The matrix an update acts on: ``(out, in·k·…)`` (conv weights are flattened)."""
    if len(shape) < 2:
        raise ValueError(
            f"a matrix parameter needs at least 2 dimensions, got shape {tuple(shape)}"
        )
    return shape[0], math.prod(shape[1:])


def as_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """View a tensor as ``(rows, -1)`` (scalars stay scalars; an empty shard keeps its column count)."""
    if not t.ndim:
        return t
    return t.reshape(rows, -1) if rows else t.reshape(0, math.prod(t.shape[1:]))
