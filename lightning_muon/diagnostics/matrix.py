"""Views of parameter-shaped tensors as matrices whose rows are output neurons.

Every statistic in :mod:`lightning_muon.diagnostics` works on a matrix ``A ∈ R^{m×n}`` whose row ``i``
holds everything that feeds output neuron ``i``. :func:`matrix_view` is the single place that
decides how a tensor of any rank becomes such a matrix.

Example:
    >>> import torch
    >>> matrix_view(torch.zeros(8, 3, 5, 5)).shape  # conv weight (out, in, kh, kw)
    torch.Size([8, 75])
    >>> matrix_view(torch.zeros(4)).shape  # a bias: each entry is its own neuron
    torch.Size([4, 1])
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["compute_dtype", "count_nonfinite", "is_matrix", "matrix_view"]


def matrix_view(x: Tensor) -> Tensor:
    """Return ``x`` as an ``(m, n)`` matrix with one row per output neuron.

    * 0-D ``()`` → ``(1, 1)``;
    * 1-D ``(m,)`` → ``(m, 1)`` (biases, norm gains: one scalar per neuron);
    * 2-D ``(m, n)`` → unchanged (``nn.Linear`` stores ``(out_features, in_features)``);
    * k-D ``(out, d_1, …, d_{k-1})`` → ``(out, d_1·…·d_{k-1})`` (a conv weight
      ``(out, in, kh, kw)`` becomes ``(out, in·kh·kw)``).

    Args:
        x: any tensor.

    Returns:
        A view when the memory layout allows it, otherwise a copy (``reshape`` semantics).
    """
    if x.ndim == 0:
        return x.reshape(1, 1)
    if x.ndim == 1:
        return x.reshape(-1, 1)
    if x.ndim == 2:
        return x
    return x.reshape(x.shape[0], -1)


def is_matrix(x: Tensor) -> bool:
    """Whether ``x`` has at least two dimensions (a weight matrix or a conv/stacked weight)."""
    return x.ndim >= 2


def count_nonfinite(x: Tensor) -> int:
    """Number of entries of ``x`` that are NaN or ±inf."""
    if x.numel() == 0:
        return 0
    return int((~torch.isfinite(x)).sum().item())


def compute_dtype(x: Tensor, dtype: torch.dtype | None = None) -> torch.dtype:
    """The floating dtype statistics of ``x`` are computed in.

    ``dtype`` wins when given; otherwise float64 inputs stay float64 and everything else
    (bf16, fp16, fp32, integers) is computed in float32.
    """
    if dtype is not None:
        return dtype
    return torch.float64 if x.dtype == torch.float64 else torch.float32
