"""Row norms and full matrices of parameters that may be sharded ``DTensor``\\ s (FSDP2).

FSDP2 (``fully_shard``) shards every parameter row-wise (``Shard(0)``): each rank holds a
contiguous block of output rows, the blocks possibly uneven (``torch.chunk`` sizes). Per-neuron
statistics therefore need no full matrix: each rank takes the norms of its own rows and the
norms are all-gathered (a few bytes per row). Spectra do need the full matrix;
:func:`full_tensor` gathers it and is meant to be called only on steps where a spectrum is due.

Both functions are collectives for a ``DTensor``: every rank of its mesh must call them, in the
same order. For a plain tensor they are local and cheap.

Example:
    >>> import torch
    >>> gathered_row_norms(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
    tensor([5., 1.])
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_muon.diagnostics.rows import row_norms

__all__ = ["full_tensor", "full_tensor_like", "gathered_row_norms", "is_dtensor", "local_tensor"]

try:  # torch >= 2.5 exposes DTensor publicly
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - torch built without distributed
    DTensor = None  # type: ignore[assignment,misc]


def is_dtensor(x: object) -> bool:
    """Whether ``x`` is a ``torch.distributed.tensor.DTensor``."""
    return DTensor is not None and isinstance(x, DTensor)


def local_tensor(x: Tensor) -> Tensor:
    """The local shard of a ``DTensor``, or ``x`` itself."""
    return x.to_local() if is_dtensor(x) else x


def full_tensor(x: Tensor) -> Tensor:
    """The whole tensor: ``DTensor.full_tensor()`` (a collective) or ``x`` itself."""
    return x.full_tensor() if is_dtensor(x) else x


def full_tensor_like(x: Tensor, param: Tensor) -> Tensor:
    """The whole of ``x``, a tensor that belongs to ``param`` (its state, its direction, …).

    ``x`` may be a ``DTensor`` (gathered), a plain tensor with ``param``'s full number of
    elements (returned as is), or a plain tensor holding the rows of ``param``'s local shard
    (wrapped with ``param``'s mesh and placements and gathered: a collective).
    """
    if is_dtensor(x) or not is_dtensor(param) or x.numel() == param.numel():
        return full_tensor(x)
    local = param.to_local()
    if x.numel() != local.numel():
        return x
    shard = DTensor.from_local(
        x.reshape(local.shape),
        param.device_mesh,
        param.placements,
        run_check=False,
        shape=param.shape,
        stride=param.stride(),
    )
    return shard.full_tensor()


def _all_gather_uneven(local: Tensor, group: dist.ProcessGroup) -> Tensor:
    """Concatenate 1-D tensors of possibly different lengths from every rank, in rank order."""
    world = dist.get_world_size(group)
    size = torch.tensor([local.numel()], dtype=torch.int64, device=local.device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = local.new_zeros(longest)
    padded[: local.numel()] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


def gathered_row_norms(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Row norms of ``matrix_view(x)`` for all ``m`` rows, on every rank.

    * plain tensor: :func:`~lightning_muon.diagnostics.rows.row_norms`;
    * ``DTensor`` sharded ``Shard(0)`` along one mesh dimension (others ``Replicate``): local row
      norms, all-gathered along that mesh dimension (FSDP2, HSDP);
    * any other placement (e.g. column sharding): norms of ``x.full_tensor()``.

    Args:
        x: parameter-shaped tensor or ``DTensor``.
        dtype: compute dtype (default float32, float64 for float64 input).

    Returns:
        1-D tensor of length ``x.shape[0]`` (or 1 for a 0-D tensor).
    """
    if not is_dtensor(x):
        return row_norms(x, dtype)
    placements = x.placements
    row_dims = [i for i, p in enumerate(placements) if p.is_shard() and p.dim == 0]
    others = [p for p in placements if not (p.is_replicate() or (p.is_shard() and p.dim == 0))]
    if x.ndim >= 1 and len(row_dims) == 1 and not others:
        local = row_norms(x.to_local(), dtype)
        return _all_gather_uneven(local, x.device_mesh.get_group(row_dims[0]))
    return row_norms(x.full_tensor(), dtype)
