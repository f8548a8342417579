r"""Optimizer diagnostics for loops that call no callbacks (litgpt's): update RMS and per-neuron norms.

Around an optimizer step, :class:`UpdateMonitor` keeps a copy of the weights and measures the
update ``ΔW = W_after − W_before`` of every parameter. For a matrix (viewed as ``(m, n)``, conv
kernels flattened) with rows ``ΔW_i`` (one per output neuron):

.. math::

    \mathrm{rms} = \frac{\|ΔW\|_F}{\sqrt{mn}}, \qquad
    r_i = \|ΔW_i\|_2, \qquad
    \mathrm{cv} = \frac{\mathrm{std}_i\, r_i}{\mathrm{mean}_i\, r_i}, \qquad
    \mathrm{relative} = \frac{\|ΔW\|_F}{\|W\|_F}

``cv`` is 0 when every neuron moves by the same amount (what NorMuon's row normalisation aims
for); plain Muon's orthogonal update has equal *singular values*, not equal rows.

FSDP2 parameters (``Shard(0)`` DTensors) are measured on the local rows — a row never straddles
ranks — and the sums, minima and maxima are all-reduced in three collectives per measurement, so
every rank gets the whole-matrix values (every rank must call :meth:`UpdateMonitor.measure`).

Logged keys (stable): ``update/<param>/rms``, ``update/<param>/row_norm_mean``,
``update/<param>/row_norm_min``, ``update/<param>/row_norm_max``, ``update/<param>/row_norm_cv``,
``update/<param>/relative`` for every matrix, and per branch ``update/<branch>/rms`` (over all its
elements) and ``update/<branch>/row_norm_cv_mean`` (mean over its matrices).

Example:
    >>> import torch, torch.nn as nn
    >>> model = nn.Linear(4, 3)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> monitor = UpdateMonitor(model.named_parameters(), {"weight": "muon", "bias": "adamw"})
    >>> model(torch.ones(2, 4)).sum().backward()
    >>> before = monitor.snapshot()
    >>> opt.step()
    >>> metrics = monitor.measure(before)
    >>> round(metrics["update/weight/rms"], 4), round(metrics["update/weight/row_norm_cv"], 4)
    (0.2, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.distributed as dist

from lightning_muon.optim.tensors import is_dtensor, local


def _sharded(p: torch.Tensor) -> bool:
    return is_dtensor(p) and dist.is_available() and dist.is_initialized()


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
        """Copies of the local weights (call right before ``optimizer.step()``)."""
        return [local(p).detach().float().clone() for _, p in self.params]

    @torch.no_grad()
    def measure(self, before: list[torch.Tensor]) -> dict[str, float]:
        """Metrics of the update since :meth:`snapshot` returned ``before`` (a collective when sharded)."""
        sums, mins, maxs, rows = [], [], [], []
        for (_, p), old in zip(self.params, before, strict=True):
            w = local(p).detach().float()
            delta = (w - old).double()  # float64 sums: the row-norm variance cancels in float32
            delta = delta.reshape(w.shape[0], -1) if w.ndim >= 2 else delta
            w = w.double()
            r = delta.norm(dim=1) if w.ndim >= 2 else delta.new_zeros(0)
            sums.append(
                torch.stack([delta.square().sum(), w.square().sum(), r.sum(), r.square().sum()])
            )
            inf = torch.tensor(math.inf, device=w.device)
            mins.append(r.min() if r.numel() else inf)
            maxs.append(r.max() if r.numel() else -inf)
            rows.append(p.shape[0] if p.ndim >= 2 else 0)
        S, lo, hi = torch.stack(sums), torch.stack(mins), torch.stack(maxs)
        if any(_sharded(p) for _, p in self.params):
            dist.all_reduce(S, op=dist.ReduceOp.SUM)
            dist.all_reduce(lo, op=dist.ReduceOp.MIN)
            dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        return self._metrics(S.tolist(), lo.tolist(), hi.tolist(), rows)

    def _metrics(
        self, S: list[list[float]], lo: list[float], hi: list[float], rows: list[int]
    ) -> dict[str, float]:
        out: dict[str, float] = {}
        branch_sq: dict[str, list[float]] = {}
        branch_cv: dict[str, list[float]] = {}
        for i, (name, p) in enumerate(self.params):
            d_sq, w_sq, r_sum, r_sq = S[i]
            branch = self.branch_of[name]
            acc = branch_sq.setdefault(branch, [0.0, 0.0])
            acc[0] += d_sq
            acc[1] += p.numel()
            if p.ndim < 2 or p.numel() == 0:
                continue
            m = rows[i]
            mean = r_sum / m
            var = max(r_sq / m - mean * mean, 0.0)
            cv = math.sqrt(var) / mean if mean > 0 else 0.0
            out[f"update/{name}/rms"] = math.sqrt(d_sq / p.numel())
            out[f"update/{name}/row_norm_mean"] = mean
            out[f"update/{name}/row_norm_min"] = lo[i]
            out[f"update/{name}/row_norm_max"] = hi[i]
            out[f"update/{name}/row_norm_cv"] = cv
            out[f"update/{name}/relative"] = math.sqrt(d_sq / w_sq) if w_sq > 0 else 0.0
            branch_cv.setdefault(branch, []).append(cv)
        for branch, (d_sq, count) in branch_sq.items():
            out[f"update/{branch}/rms"] = math.sqrt(d_sq / count) if count else 0.0
        for branch, cvs in branch_cv.items():
            out[f"update/{branch}/row_norm_cv_mean"] = sum(cvs) / len(cvs)
        return out
