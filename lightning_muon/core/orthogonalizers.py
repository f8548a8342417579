"""Orthogonalizers as objects: the map ``X ↦ O``, its cost, and the dtype that carries its results.

Every executor (one process, DDP, FSDP2) treats an orthogonalizer through this interface only:

* ``O = orth(X)`` on stacked matrices ``(N, m, n)``, returning ``X``'s dtype;
* ``orth.flops(m, n, device)``: the cost of one matrix, used to balance owner ranks;
* ``orth.result_dtype(dtype, device)``: the narrowest dtype that holds every result exactly
  (a Newton–Schulz run in bf16 returns bf16 values stored in fp32, so its results can travel in
  bf16 without changing a bit; an exact SVD needs the full dtype).

Three kinds exist: :class:`NewtonSchulz` (a coefficient table), :class:`ExactPolar` (SVD) and
:class:`SpectralPower` (``Ψ_p = U_s Σ^p V_sᵀ``, SpectralMuon). A new one subclasses
:class:`Orthogonalizer` and implements ``__call__`` and ``flops``.

Example:
    >>> import torch
    >>> orth = make_orthogonalizer("jordan", steps=5)
    >>> orth(torch.randn(2, 8, 16)).shape
    torch.Size([2, 8, 16])
    >>> orth.flops(768, 3072, torch.device("cpu"))
    40768634880
    >>> orth.result_dtype(torch.float32, torch.device("cuda"))
    torch.bfloat16
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: Names of the compute and transfer dtypes accepted by ``ns_dtype`` and ``transfer_dtype`` (re-exported).
from .ns_dtype import DTYPES as DTYPES
from .ns_dtype import default_ns_dtype
from .orthogonalize import (
    JORDAN,
    NAMED_TABLES,
    NS_FORMS,
    ORTHOGONALIZER_NAMES,
    NewtonSchulzTable,
    custom_table,
    exact_polar,
    newton_schulz,
    ns_flops,
)
from .spectral import spectral_power


class Orthogonalizer(ABC):
    """``X (..., m, n) ↦ O`` with its cost model and the dtype its results fit in exactly."""

    @abstractmethod
    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """The result for every stacked matrix of ``X``, in ``X``'s dtype: a new tensor the caller
        owns (never ``X`` or a view of it; the caller may overwrite it)."""

    @abstractmethod
    def flops(self, m: int, n: int, device: torch.device) -> int:
        """Floating-point operations for one ``m × n`` matrix on ``device``."""

    def result_dtype(self, dtype: torch.dtype, device: torch.device) -> torch.dtype:
        """The narrowest dtype holding every result for ``dtype`` inputs exactly (default: ``dtype``)."""
        return dtype


@dataclass(frozen=True)
class NewtonSchulz(Orthogonalizer):
    """Quintic Newton–Schulz (:func:`~lightning_muon.core.orthogonalize.newton_schulz`).

    Attributes:
        table: the coefficient schedule.
        steps: iterations.
        eps: normalisation epsilon.
        dtype: compute dtype (``None``: :func:`~lightning_muon.core.ns_dtype.default_ns_dtype`).
        form: ``"auto"``, ``"fast"``, ``"direct"`` or ``"gram"``.
    """

    table: NewtonSchulzTable = JORDAN
    steps: int = 5
    eps: float = 1e-7
    dtype: torch.dtype | None = None
    form: str = "auto"

    def __post_init__(self) -> None:
        if self.form not in NS_FORMS:
            raise ValueError(f"Invalid ns_form: {self.form!r} (expected one of {NS_FORMS})")

    def compute_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype the iteration runs in on ``device``."""
        return self.dtype or default_ns_dtype(device)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        return newton_schulz(X, self.table, self.steps, self.eps, self.dtype, self.form)

    def flops(self, m: int, n: int, device: torch.device) -> int:
        return ns_flops(m, n, self.steps, self.compute_dtype(device), self.form)

    def result_dtype(self, dtype: torch.dtype, device: torch.device) -> torch.dtype:
        compute = self.compute_dtype(device)
        return compute if compute.itemsize < dtype.itemsize else dtype


@dataclass(frozen=True)
class ExactPolar(Orthogonalizer):
    """The exact polar factor ``U Vᵀ`` by SVD in float64 (:func:`~lightning_muon.core.orthogonalize.exact_polar`)."""

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        # a step masked for a non-finite gradient (nonfinite="skip") still computes: LAPACK refuses NaN
        return exact_polar(_finite_or_zero(X))

    def flops(self, m: int, n: int, device: torch.device) -> int:
        a, b = min(m, n), max(m, n)
        return 14 * a * a * b + 8 * a**3  # Golub–Kahan SVD with vectors, then U·Vᵀ


@dataclass(frozen=True)
class SpectralPower(Orthogonalizer):
    """``Ψ_p(X) = U_s Σ^p V_sᵀ`` for ``p ∈ {¼, ½, 1}`` (:func:`~lightning_muon.core.spectral.spectral_power`).

    Attributes:
        power: ``p``.
        method: ``"newton"`` (coupled iterations) or ``"svd"`` (exact, float64).
        iters: coupled-iteration steps.
        eps: Tikhonov floor of the Gram matrix.
    """

    power: float
    method: str = "newton"
    iters: int = 15
    eps: float = 1e-6

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        if self.method == "svd":  # as ExactPolar: a masked step's NaN input must not reach LAPACK
            X = _finite_or_zero(X)
        return spectral_power(X, self.power, self.method, self.iters, self.eps)

    def flops(self, m: int, n: int, device: torch.device) -> int:
        a, b = min(m, n), max(m, n)
        if self.power == 1.0:
            return 0
        if self.method == "svd":
            return ExactPolar().flops(m, n, device)
        roots = 2 if self.power == 0.25 else 1
        # per root: the Gram matrix and the product (2·2a²b), two coupled iterations of 3 products each
        return roots * (4 * a * a * b + 2 * self.iters * 3 * 2 * a**3)


def make_orthogonalizer(
    spec: str | Sequence[Sequence[float]] | Orthogonalizer,
    steps: int = 5,
    eps: float = 1e-7,
    dtype: torch.dtype | None = None,
    form: str = "auto",
) -> Orthogonalizer:
    """The orthogonalizer named by ``spec``.

    Args:
        spec: ``"jordan"``, ``"you"``, ``"polar_express"``, ``"svd"`` (exact polar factor), a custom
            coefficient table (a sequence of ``(a, b, c)`` triples, normalisation ``‖X‖_F``), or an
            :class:`Orthogonalizer` (returned as it is).
        steps: Newton–Schulz iterations (ignored for ``"svd"``).
        eps: normalisation epsilon.
        dtype: compute dtype (``None``: by device).
        form: Newton–Schulz form, ``"auto"``, ``"fast"``, ``"direct"`` or ``"gram"``.
    """
    if form not in NS_FORMS:
        raise ValueError(f"Invalid ns_form: {form!r} (expected one of {NS_FORMS})")
    if isinstance(spec, Orthogonalizer):
        return spec
    if isinstance(spec, str):
        if spec == "svd":
            return ExactPolar()
        if spec not in NAMED_TABLES:
            raise ValueError(
                f"Invalid orthogonalizer: {spec!r}; expected one of {ORTHOGONALIZER_NAMES} or a list of (a, b, c) triples"
            )
        table = NAMED_TABLES[spec]
    else:
        table = custom_table(spec)
    return NewtonSchulz(table, steps, eps, dtype, form)


def check_orthogonalizer(spec: object) -> None:
    """Raise ``ValueError`` unless ``spec`` names an orthogonalizer (see :func:`make_orthogonalizer`)."""
    if isinstance(spec, Orthogonalizer):
        return
    if isinstance(spec, str):
        if spec not in ORTHOGONALIZER_NAMES:
            raise ValueError(
                f"Invalid orthogonalizer: {spec!r} (expected one of {', '.join(map(repr, ORTHOGONALIZER_NAMES))} "
                "or a list of (a, b, c) triples)"
            )
        return
    custom_table(spec)  # type: ignore[arg-type]


def _finite_or_zero(X: torch.Tensor) -> torch.Tensor:
    """``X`` with non-finite entries set to 0: only a step that is discarded anyway (a skipped
    step's masked input) has them, and the SVD-based paths would raise on them. One read of ``X``,
    negligible beside an SVD."""
    return torch.where(torch.isfinite(X), X, 0)
