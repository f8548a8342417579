r"""Optimizer diagnostics for loops that call no callbacks (litgpt's): update RMS and per-neuron norms.

Around an optimizer step, :class:`UpdateMonitor` keeps a copy of the weights and measures the
update ``ΔW = W_after − W_before`` of every parameter with the framework-free functions of
:mod:`lightning_muon.diagnostics` (the same statistics the Lightning callback
:class:`~lightning_muon.callbacks.UpdateNormMonitor` reports). For a matrix viewed as ``(m, n)``
with rows ``ΔW_i`` (one per output neuron):

.. math::

    \mathrm{rms} = \frac{\|ΔW\|_F}{\sqrt{mn}}, \qquad
    r_i = \|ΔW_i\|_2, \qquad
    \mathrm{row\_cv} = \frac{\mathrm{std}_i\, r_i}{\mathrm{mean}_i\, r_i}, \qquad
    \mathrm{update\_to\_weight} = \frac{\|ΔW\|_F}{\|W\|_F}

``row_cv`` is 0 when every neuron moves by the same amount (what NorMuon's row normalisation aims
for); plain Muon's orthogonal update has equal *singular values*, not equal rows.

FSDP2 parameters (``Shard(0)`` DTensors) are measured on their local rows — a row never straddles
ranks — and the row norms are all-gathered
(:func:`~lightning_muon.diagnostics.gathered_row_norms`), so every rank gets the whole-matrix
values; every rank must call :meth:`UpdateMonitor.measure`.

Logged keys: those of the Lightning callback :class:`~lightning_muon.callbacks.UpdateNormMonitor`
(one schema, :meth:`~lightning_muon.diagnostics.history.UpdateNormRecord.metrics`) —
``update_norm/<param>/row_mean``, ``row_std``, ``row_cv``, ``row_min_max_ratio``, ``rms`` and
``update_to_weight`` for every matrix — and per branch ``update_norm/<branch>/rms`` (over all its
elements) and ``update_norm/<branch>/row_cv_mean`` (mean over its matrices).

Example:
    >>> import torch, torch.nn as nn
    >>> model = nn.Linear(4, 3)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> monitor = UpdateMonitor(model.named_parameters(), {"weight": "muon", "bias": "adamw"})
    >>> model(torch.ones(2, 4)).sum().backward()
    >>> before = monitor.snapshot()
    >>> opt.step()
    >>> metrics = monitor.measure(before)
    >>> round(metrics["update_norm/weight/rms"], 4), round(metrics["update_norm/weight/row_cv"], 4)
    (0.2, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from lightning_muon.diagnostics import gathered_row_norms, is_dtensor
from lightning_muon.diagnostics.history import UpdateNormRecord


def _like(local: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``local`` (this rank's part of a tensor shaped like ``param``) as ``param`` is laid out."""
    if not is_dtensor(param):
        return local
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        local, param.device_mesh, param.placements, shape=param.shape, stride=param.stride()
    )


class UpdateMonitor:
    """Measures each step's weight update of ``named_parameters`` (see the module docstring).

    Args:
        named_parameters: ``(name, parameter)`` pairs of the model being trained.
        branch_of: optimizer branch (``"muon"`` / ``"adamw"``) of each name; missing names count as ``"adamw"``.
    """

    def __init__(
        self, named_parameters: Iterable[tuple[str, torch.Tensor]], branch_of: dict[str, str]
    ) -> None:
        self.params = [(n, p) for n, p in named_parameters if p.requires_grad]
        self.branch_of = {n: branch_of.get(n, "adamw") for n, _ in self.params}

    @torch.no_grad()
    def snapshot(self) -> list[torch.Tensor]:
        """Copies of the (local) weights; call right before ``optimizer.step()``."""
        local = [p.to_local() if is_dtensor(p) else p for _, p in self.params]
        return [w.detach().to(torch.float64, copy=True) for w in local]

    @torch.no_grad()
    def measure(self, before: list[torch.Tensor]) -> dict[str, float]:
        """Metrics of the update since :meth:`snapshot` returned ``before`` (a collective when sharded)."""
        out: dict[str, float] = {}
        sq: dict[str, float] = {}
        count: dict[str, int] = {}
        cvs: dict[str, list[float]] = {}
        for (name, p), old in zip(self.params, before, strict=True):
            # float64: the row-norm spread of a small update cancels in float32
            delta = (p.to_local() if is_dtensor(p) else p).detach().double() - old
            delta_rows = gathered_row_norms(_like(delta, p))
            branch = self.branch_of[name]
            sq[branch] = sq.get(branch, 0.0) + float(delta_rows.square().sum())
            count[branch] = count.get(branch, 0) + p.numel()
            if p.ndim < 2 or p.numel() == 0:
                continue
            record = UpdateNormRecord.from_tensors(
                0, name, tuple(p.shape), delta_rows, gathered_row_norms(_like(old, p))
            )
            out.update({f"update_norm/{name}/{k}": v for k, v in record.metrics().items()})
            cvs.setdefault(branch, []).append(record.stats.rows.cv)
        for branch, total in sq.items():
            out[f"update_norm/{branch}/rms"] = (
                math.sqrt(total / count[branch]) if count[branch] else 0.0
            )
        for branch, values in cvs.items():
            out[f"update_norm/{branch}/row_cv_mean"] = sum(values) / len(values)
        return out
