"""Small tensor helpers shared by the optimizer shell and its AdamW branch."""

from __future__ import annotations

import torch


def is_dtensor(t: torch.Tensor) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (checked by duck type, no distributed import)."""
    return hasattr(t, "to_local") and hasattr(t, "placements")


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor, or the tensor itself."""
    return t.to_local() if is_dtensor(t) else t
