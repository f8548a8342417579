"""In-memory history of diagnostic measurements: records, tidy rows, and plain-data round trips.

A record is one measurement of one parameter at one optimizer step:

* :class:`UpdateNormRecord`: the per-neuron update norms of a matrix and their summary;
* :class:`SpectrumRecord`: the singular values of one *source* matrix (``"update"``,
  ``"momentum"``, ``"direction"`` or ``"weight"``) and their summary.

:func:`tidy_rows` flattens records into one row per (step, parameter, source, metric) — "tidy"
data that ``pandas.DataFrame(rows)`` or any plotting tool takes as is. :meth:`to_state` /
``from_state`` turn records into tensors, numbers and strings only, so they survive
``torch.save`` / ``torch.load(weights_only=True)`` inside a Lightning checkpoint.

Example:
    >>> import torch
    >>> from lightning_muon.diagnostics.rows import row_norms, update_statistics
    >>> delta, w = torch.tensor([[3.0, 4.0], [0.0, 1.0]]), torch.eye(2)
    >>> rec = UpdateNormRecord.from_tensors(10, "fc.weight", (2, 2), row_norms(delta), row_norms(w))
    >>> rec.metrics()["row_mean"], tidy_rows([rec])[0]["metric"]
    (3.0, 'row_mean')
    >>> UpdateNormRecord.from_state(rec.to_state()) == rec
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_muon.diagnostics.rows import RowNormSummary, UpdateStats, update_statistics
from lightning_muon.diagnostics.spectrum import SpectrumStats, stats_from_singular_values

__all__ = ["SOURCES", "SpectrumRecord", "UpdateNormRecord", "tidy_rows"]

#: Matrices whose spectrum :class:`~lightning_muon.callbacks.SpectrumMonitor` can record.
SOURCES: tuple[str, ...] = ("update", "momentum", "direction", "weight")


def _vector(x: Tensor) -> Tensor:
    return x.detach().reshape(-1).to(device="cpu", dtype=torch.float32)


def _same_vector(a: Tensor, b: Tensor) -> bool:
    return (
        a.shape == b.shape
        and bool(torch.equal(a.isnan(), b.isnan()))
        and bool(torch.equal(a.nan_to_num(), b.nan_to_num()))
    )


@dataclass(eq=False)
class UpdateNormRecord:
    """Per-neuron update norms of one parameter at one optimizer step.

    Attributes:
        step: index of the optimizer step (``trainer.global_step`` before it; the ``step``
            Lightning's loggers show for that batch).
        param: parameter name.
        shape: parameter shape.
        row_norms: ``‖ΔW_{i,:}‖_2`` for every output row (float32, CPU).
        stats: summary, update RMS and update-to-weight ratio.
    """

    step: int
    param: str
    shape: tuple[int, ...]
    row_norms: Tensor
    stats: UpdateStats

    @classmethod
    def from_tensors(
        cls, step: int, param: str, shape: tuple[int, ...], delta_rows: Tensor, weight_rows: Tensor
    ) -> UpdateNormRecord:
        """Build a record from the row norms of ``ΔW`` and of ``W`` before the step."""
        num_cols = math.prod(shape[1:]) if len(shape) > 1 else 1
        stats = update_statistics(delta_rows, weight_rows, num_cols)
        return cls(step, param, tuple(shape), _vector(delta_rows), stats)

    def metrics(self) -> dict[str, float]:
        """Metric name → value, the names used in logged keys (see ``UpdateNormMonitor``)."""
        r = self.stats.rows
        return {
            "row_mean": r.mean,
            "row_std": r.std,
            "row_cv": r.cv,
            "row_min_max_ratio": r.min_max_ratio,
            "rms": self.stats.rms,
            "update_to_weight": self.stats.update_to_weight,
        }

    def to_state(self) -> dict[str, Any]:
        """Plain data (tensors, numbers, strings) for a checkpoint."""
        return {
            "step": self.step,
            "param": self.param,
            "shape": list(self.shape),
            "row_norms": self.row_norms.clone(),
            "rows": self.stats.rows.as_dict(),
            "rms": self.stats.rms,
            "update_to_weight": self.stats.update_to_weight,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> UpdateNormRecord:
        """Inverse of :meth:`to_state`; raises ``KeyError``/``TypeError`` on malformed state."""
        stats = UpdateStats(
            RowNormSummary(**state["rows"]), float(state["rms"]), float(state["update_to_weight"])
        )
        return cls(
            int(state["step"]),
            str(state["param"]),
            tuple(int(d) for d in state["shape"]),
            _vector(state["row_norms"]),
            stats,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UpdateNormRecord):
            return NotImplemented
        return _equal_states(self.to_state(), other.to_state())


@dataclass(eq=False)
class SpectrumRecord:
    """Singular values of one source matrix of one parameter at one optimizer step.

    Attributes:
        step: index of the optimizer step (``trainer.global_step`` before it; the ``step``
            Lightning's loggers show for that batch).
        param: parameter name.
        source: one of :data:`SOURCES`.
        shape: ``(m, n)`` of the matrix view.
        singular_values: descending singular values (float32, CPU; empty if not decomposed).
        stats: summary statistics.
        top_k: how many top singular values are reported.
    """

    step: int
    param: str
    source: str
    shape: tuple[int, int]
    singular_values: Tensor
    stats: SpectrumStats
    top_k: int = field(default=3)

    @classmethod
    def from_singular_values(
        cls,
        step: int,
        param: str,
        source: str,
        shape: tuple[int, int],
        sv: Tensor,
        top_k: int = 3,
        num_nonfinite: int = 0,
    ) -> SpectrumRecord:
        """Build a record (and its statistics) from singular values."""
        stats = stats_from_singular_values(sv, shape, top_k, num_nonfinite)
        return cls(step, param, source, tuple(shape), _vector(sv), stats, top_k)  # type: ignore[arg-type]

    def metrics(self) -> dict[str, float]:
        """Metric name → value, the names used in logged keys (see ``SpectrumMonitor``)."""
        s = self.stats
        out = {f"sigma_{i + 1}": v for i, v in enumerate(s.top_k)}
        out.update(
            sigma_min=s.sigma_min,
            condition_number=s.condition_number,
            stable_rank=s.stable_rank,
            effective_rank=s.effective_rank,
        )
        if self.source == "direction":
            out["orthogonality_error"] = s.orthogonality_error
        return out

    def to_state(self) -> dict[str, Any]:
        """Plain data (tensors, numbers, strings) for a checkpoint."""
        return {
            "step": self.step,
            "param": self.param,
            "source": self.source,
            "shape": list(self.shape),
            "singular_values": self.singular_values.clone(),
            "num_nonfinite": self.stats.num_nonfinite,
            "top_k": self.top_k,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SpectrumRecord:
        """Inverse of :meth:`to_state` (statistics are recomputed from the singular values)."""
        shape = tuple(int(d) for d in state["shape"])
        return cls.from_singular_values(
            int(state["step"]),
            str(state["param"]),
            str(state["source"]),
            shape,  # type: ignore[arg-type]
            _vector(state["singular_values"]),
            int(state["top_k"]),
            int(state["num_nonfinite"]),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpectrumRecord):
            return NotImplemented
        return _equal_states(self.to_state(), other.to_state())


def _equal_states(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for k, va in a.items():
        vb = b[k]
        if isinstance(va, Tensor):
            if not isinstance(vb, Tensor) or not _same_vector(va, vb):
                return False
        elif isinstance(va, float) and isinstance(vb, float):
            if not (va == vb or (math.isnan(va) and math.isnan(vb))):
                return False
        elif isinstance(va, dict):
            if not isinstance(vb, dict) or not _equal_states(va, vb):
                return False
        elif va != vb:
            return False
    return True


def tidy_rows(records: Iterable[UpdateNormRecord | SpectrumRecord]) -> list[dict[str, Any]]:
    """One dict per (step, param, source, metric, value); ``source`` is ``"update"`` for norms.

    Args:
        records: any mix of :class:`UpdateNormRecord` and :class:`SpectrumRecord`.

    Returns:
        A list of dicts with keys ``step, param, source, metric, value``.
    """
    rows: list[dict[str, Any]] = []
    for rec in records:
        source = rec.source if isinstance(rec, SpectrumRecord) else "update"
        for metric, value in rec.metrics().items():
            rows.append(
                {
                    "step": rec.step,
                    "param": rec.param,
                    "source": source,
                    "metric": metric,
                    "value": value,
                }
            )
    return rows
