"""What the package knows about one optimizer: :class:`OptimizerSpec` and its parts.

The entries themselves live in :mod:`lightning_muon.optim.registry`.

Example:
    >>> import torch
    >>> spec = OptimizerSpec(
    ...     name="sgd", cls=torch.optim.SGD, family="baseline", reference=lambda G, state, hp: G,
    ...     variants=(Variant("default"),), invalid=(ErrorCase({"lr": -1.0}, "lr", "Invalid learning rate"),),
    ... )
    >>> spec.hyperparameters(momentum=0.9)["momentum"]
    0.9
    >>> spec.invalid[0].pattern
    'Invalid learning rate'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer

from ..reference import ReferenceOptimizer

FAMILIES = ("muon", "baseline")


@dataclass(frozen=True)
class Variant:
    """A constructor setting worth testing: a label (a pytest id) and keyword arguments."""

    label: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ErrorCase:
    """Constructor arguments that must raise ``ValueError`` naming ``argument``.

    ``match`` is the regular expression the message must contain; by default ``Invalid <argument>``,
    the form of every check in :mod:`lightning_muon.optim.validation`.
    """

    kwargs: Mapping[str, Any]
    argument: str
    match: str | None = None

    @property
    def pattern(self) -> str:
        """The regular expression the error message must match."""
        return self.match if self.match is not None else f"Invalid {self.argument}"


@dataclass(frozen=True)
class OptimizerSpec:
    """Everything the package and its tests know about one optimizer.

    Attributes:
        name: the registry name (``"normuon"``), also the recipe file names.
        cls: the optimizer class.
        family: ``"muon"`` (routed: an orthogonal and an AdamW branch) or ``"baseline"``.
        reference: the per-matrix reference update ``update(G, state, hp) -> U``
            (:mod:`lightning_muon.reference.algorithms`).
        variants: constructor settings worth testing; the first is the defaults (no arguments).
        invalid: constructor arguments that must raise ``ValueError``, and what the message says.
        aliases: further names that resolve to this spec (case, ``-`` and ``_`` never matter).
        settings: keyword arguments every configuration path applies on top of the class
            defaults: the ``"adamw"`` baseline's LLM settings; empty for the Muon family, whose
            constructor defaults are their settings.
    """

    name: str
    cls: type[Optimizer]
    family: str
    reference: Callable[..., torch.Tensor]
    variants: tuple[Variant, ...]
    invalid: tuple[ErrorCase, ...]
    aliases: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"Invalid family: {self.family!r} (expected one of {FAMILIES})")
        if not self.variants or self.variants[0].kwargs:
            raise ValueError(f"{self.name}: the first variant must be the defaults (no arguments)")
        labels = [v.label for v in self.variants]
        if len(set(labels)) != len(labels):
            raise ValueError(f"{self.name}: variant labels repeat: {labels}")

    def build(self, params: Any, **kwargs: Any) -> Optimizer:
        """``cls(params, **settings, **kwargs)``."""
        return self.cls(params, **{**self.settings, **kwargs})

    def hyperparameters(self, **kwargs: Any) -> dict[str, Any]:
        """Every group hyperparameter of ``build(..., **kwargs)``, validated by the class itself.

        Read from a throwaway instance's ``defaults`` (torch's public record of them), so the
        values are exactly those the class uses, however its constructor is written.
        """
        probe = torch.nn.Parameter(torch.zeros(2, 2))
        params = [{"params": [probe], "branch": "muon"}] if self.family == "muon" else [probe]
        return dict(self.build(params, **kwargs).defaults)

    def reference_optimizer(
        self, weights: Sequence[torch.Tensor], dtype: torch.dtype = torch.float64, **kwargs: Any
    ) -> ReferenceOptimizer:
        """The reference tier of ``build(weights, **kwargs)``: a per-matrix loop in ``dtype``."""
        return ReferenceOptimizer(weights, self.reference, self.hyperparameters(**kwargs), dtype)

    def variant(self, label: str) -> Variant:
        """The variant called ``label``."""
        for v in self.variants:
            if v.label == label:
                return v
        raise ValueError(
            f"Invalid variant label: {label!r} for {self.name} "
            f"(expected one of {', '.join(v.label for v in self.variants)})"
        )
