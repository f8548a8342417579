"""``torch.compile`` of a step's elementwise halves (``begin``, ``finish``), with an eager fallback.

Scheduled hyperparameters (:attr:`~lightning_muon.engine.step.MatrixStep.scheduled`: momentum,
betas) reach the compiled graph as 0-d float64 tensors, so a schedule that changes them between
steps reuses the graph instead of recompiling (inductor specialises Python floats). Any failure of
the compiled call (a graph break under ``fullgraph``, a backend error, the recompile limit) runs
the eager hook instead, with one warning per hook, and later steps stay eager.

Example:
    >>> hooks = ElementwiseHooks(False)  # eager: the step's own methods
    >>> hooks.backend
    False
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from .step import MatrixStep

_FAILED = object()


class ElementwiseHooks:
    """Calls ``step.begin`` / ``step.finish``, compiled with ``backend`` (``False``: eager).

    Args:
        backend: ``False``, ``True`` (inductor) or a ``torch.compile`` backend name.
        owner: the name used in warnings (the optimizer's class name).
    """

    def __init__(self, backend: bool | str, owner: str = "optimizer") -> None:
        self.backend = backend
        self.owner = owner
        self._compiled: dict[tuple[type, str], Any] = {}
        self._scalars: dict[tuple[Any, torch.device], torch.Tensor] = {}

    def begin(self, step: MatrixStep, G: torch.Tensor, S: dict[str, torch.Tensor]) -> torch.Tensor:
        """``step.begin(G, S)``."""
        return self._call(step, "begin", G, S)

    def finish(self, step: MatrixStep, O: torch.Tensor, S: dict[str, torch.Tensor], ctx: Any) -> torch.Tensor:
        """``step.finish(O, S, ctx)``."""
        return self._call(step, "finish", O, S, ctx)

    def _call(self, step: MatrixStep, name: str, *args: Any) -> torch.Tensor:
        if not self.backend:
            return getattr(step, name)(*args)
        key = (type(step), name)
        compiled = self._compiled.get(key)
        if compiled is None:
            chosen = "inductor" if self.backend is True else self.backend
            compiled = self._compiled[key] = torch.compile(
                getattr(type(step), name), backend=chosen, fullgraph=True
            )
        if compiled is _FAILED:
            return getattr(step, name)(*args)
        device = args[0].device
        try:  # fullgraph: a compile error is raised before any tensor is touched
            return compiled(self._tensorized(step, device), *args)
        except Exception as err:  # noqa: BLE001 - every failure of the compiler falls back
            warnings.warn(
                f"{self.owner}: torch.compile of {name} failed, running it eagerly: "
                f"{type(err).__name__}: {err}",
                stacklevel=4,
            )
            self._compiled[key] = _FAILED
            return getattr(step, name)(*args)

    def _tensorized(self, step: MatrixStep, device: torch.device) -> MatrixStep:
        h = dict(step.h)
        for key in step.scheduled:
            if key in h:
                h[key] = _map_numbers(h[key], lambda v: self._scalar(v, device))
        return step.with_hyperparameters(h)

    def _scalar(self, value: float, device: torch.device) -> torch.Tensor:
        key = (value, device)
        if key not in self._scalars:
            if len(self._scalars) > 256:
                self._scalars.clear()
            self._scalars[key] = torch.tensor(value, dtype=torch.float64, device=device)
        return self._scalars[key]


def _map_numbers(value: Any, fn: Callable[[float], Any]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | tuple | list):
        return value
    if isinstance(value, tuple | list):
        return type(value)(_map_numbers(v, fn) for v in value)
    return fn(float(value))
