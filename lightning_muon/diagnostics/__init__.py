"""Framework-free diagnostics of optimizer updates: per-neuron norms and singular-value spectra.

Plain functions on tensors (no Lightning): the callbacks in :mod:`lightning_muon.callbacks` are
thin adapters over them, and notebooks can call them directly. :func:`load_history` reads a
finished run's history back from its checkpoint (or run folder) for the plotting functions.

Example:
    >>> import torch
    >>> from lightning_muon.diagnostics import row_norms, spectrum_stats, summarize_row_norms
    >>> delta = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    >>> summarize_row_norms(row_norms(delta)).num_rows
    64
    >>> stats, sv = spectrum_stats(delta)
    >>> sv.shape, stats.condition_number > 1
    (torch.Size([32]), True)
"""

from lightning_muon.diagnostics.checkpoint import find_checkpoint, load_histories, load_history
from lightning_muon.diagnostics.distributed import (
    full_tensor,
    gathered_row_norms,
    is_dtensor,
    local_tensor,
)
from lightning_muon.diagnostics.history import SOURCES, SpectrumRecord, UpdateNormRecord, tidy_rows
from lightning_muon.diagnostics.matrix import count_nonfinite, is_matrix, matrix_view
from lightning_muon.diagnostics.plotting import (
    compare_runs,
    plot_metric_history,
    plot_row_norms,
    plot_spectra,
)
from lightning_muon.diagnostics.rows import (
    RowNormSummary,
    UpdateStats,
    frobenius_from_row_norms,
    row_norms,
    summarize_row_norms,
    update_rms,
    update_statistics,
    update_to_weight_ratio,
)
from lightning_muon.diagnostics.spectrum import (
    SpectrumStats,
    condition_number,
    effective_rank,
    orthogonality_error,
    singular_values,
    spectrum_stats,
    stable_rank,
    stats_from_singular_values,
)

__all__ = [
    "SOURCES",
    "RowNormSummary",
    "SpectrumRecord",
    "SpectrumStats",
    "UpdateNormRecord",
    "UpdateStats",
    "compare_runs",
    "condition_number",
    "count_nonfinite",
    "effective_rank",
    "find_checkpoint",
    "frobenius_from_row_norms",
    "full_tensor",
    "gathered_row_norms",
    "is_dtensor",
    "is_matrix",
    "load_histories",
    "load_history",
    "local_tensor",
    "matrix_view",
    "orthogonality_error",
    "plot_metric_history",
    "plot_row_norms",
    "plot_spectra",
    "row_norms",
    "singular_values",
    "spectrum_stats",
    "stable_rank",
    "stats_from_singular_values",
    "summarize_row_norms",
    "tidy_rows",
    "update_rms",
    "update_statistics",
    "update_to_weight_ratio",
]
