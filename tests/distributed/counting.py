"""Count the matrices each rank orthogonalizes, through the optimizer's public ``orthogonalizer(group)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_muon.core.orthogonalizers import Orthogonalizer


@dataclass(frozen=True)
class Counting(Orthogonalizer):
    """Delegates to ``inner`` and appends the number of matrices of each call to ``calls``."""

    inner: Orthogonalizer
    calls: list[int] = field(compare=False)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        self.calls.append(X.shape[0])
        return self.inner(X)

    def flops(self, m: int, n: int, device: torch.device) -> int:
        return self.inner.flops(m, n, device)

    def result_dtype(self, dtype: torch.dtype, device: torch.device) -> torch.dtype:
        return self.inner.result_dtype(dtype, device)


def count_orthogonalized(opt: Any) -> list[int]:
    """From now on, every orthogonalizer call of ``opt`` appends its number of matrices to the returned list."""
    calls: list[int] = []
    chosen = type(opt).orthogonalizer

    def counted(group: dict[str, Any]) -> Orthogonalizer:
        return Counting(chosen(opt, group), calls)

    opt.orthogonalizer = counted
    return calls
