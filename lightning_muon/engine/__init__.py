"""The matrix engine: one interface between an optimizer's algorithm and its executors.

Layers (each imports only those before it): :mod:`lightning_muon.core` (pure tensor transforms
and the orthogonalizers) → ``engine`` (the :class:`MatrixStep` interface, buckets, the local
executor) → :mod:`lightning_muon.distributed` (owner-computes executors for DDP and FSDP2) →
:mod:`lightning_muon.optim` (the optimizers). See ``docs/architecture.md``.
"""

from .blocks import Blocking, Blocks
from .buckets import DEFAULT_MAX_BUCKET_NUMEL, BucketWork
from .compiled import ElementwiseHooks
from .local import LocalExecutor, MatrixGroup
from .step import Capture, MatrixContext, MatrixStep
from .tensors import as_rows, is_dtensor, local, matrix_shape, state_dtype, state_zeros

__all__ = [
    "Blocking",
    "Blocks",
    "DEFAULT_MAX_BUCKET_NUMEL",
    "BucketWork",
    "Capture",
    "ElementwiseHooks",
    "LocalExecutor",
    "MatrixContext",
    "MatrixGroup",
    "MatrixStep",
    "as_rows",
    "is_dtensor",
    "local",
    "matrix_shape",
    "state_dtype",
    "state_zeros",
]
