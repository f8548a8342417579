"""The registry of optimizers: one :class:`OptimizerSpec` per name, and the one name resolver.

A spec declares everything the rest of the package and its tests need to know about an
optimizer: its name and aliases, its class, the constructor variants worth testing, the
constructor arguments it must reject, and its reference update
(:mod:`lightning_muon.reference`). The contract, oracle and parity tests are generated from
:data:`SPECS`; configuration paths and benchmarks take names and classes from this module.

* :data:`SPECS`: registry name → spec, the Muon family first, then the ``"adamw"`` baseline.
* :data:`OPTIMIZERS`: registry name → class, the Muon family only.
* :func:`available_names`: the names, optionally of one family.
* :func:`spec_for`: the spec of a name, class name, alias, dotted path or class.
* :func:`get_optimizer_class`: the class; with ``import_paths=True`` a dotted path (or class)
  outside the registry resolves to itself.

Example:
    >>> get_optimizer_class("NorMuon").__name__
    'NorMuon'
    >>> available_names("muon")
    ['muon', 'normuon', 'adamuon', 'muon_nsr', 'muon_vs', 'spectral_muon']
    >>> get_optimizer_class("adamw")
    <class 'torch.optim.adamw.AdamW'>
    >>> get_optimizer_class("torch.optim.SGD", import_paths=True)
    <class 'torch.optim.sgd.SGD'>
    >>> [v.label for v in spec_for("adamuon").variants][:2]
    ['default', 'muon+adam']
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch.optim import Optimizer

from ..reference import ALGORITHMS
from .adamuon import AdaMuon
from .muon import Muon
from .normuon import NorMuon
from .spec import FAMILIES, ErrorCase, OptimizerSpec, Variant
from .spectral import SpectralMuon
from .varmuon import MuonNSR, MuonVS

__all__ = [
    "OPTIMIZERS",
    "SPECS",
    "ErrorCase",
    "OptimizerSpec",
    "Variant",
    "available_names",
    "get_optimizer_class",
    "spec_for",
]

# ---------------------------------------------------------------- error inputs
#: Rejected by every Muon-family constructor (the shared hyperparameters).
SHARED_INVALID = (
    ErrorCase({"lr": -1.0}, "lr"),
    ErrorCase({"lr": float("nan")}, "lr"),
    ErrorCase({"weight_decay": -0.1}, "weight_decay"),
    ErrorCase({"adamw_betas": (0.9, 1.0)}, "adamw_betas"),
    ErrorCase({"adamw_eps": 0.0}, "adamw_eps"),
    ErrorCase({"adamw_lr_ratio": -1.0}, "adamw_lr_ratio"),
    ErrorCase({"orthogonalizer": "newton"}, "orthogonalizer"),
    ErrorCase({"orthogonalizer": [(1.0, 2.0)]}, "orthogonalizer"),
    ErrorCase({"ns_steps": 0}, "ns_steps"),
    ErrorCase({"ns_steps": 100}, "ns_steps"),
    ErrorCase({"ns_dtype": "int8"}, "ns_dtype"),
    ErrorCase({"scale": "huge"}, "scale"),
    ErrorCase({"rms_target": 0.0}, "rms_target"),
    ErrorCase({"nonfinite": "ignore"}, "nonfinite"),
    ErrorCase({"vocab_size": 0}, "vocab_size"),
    ErrorCase({"ns_form": "quick"}, "ns_form"),
    ErrorCase({"max_bucket_numel": 0}, "max_bucket_numel"),
    ErrorCase({"max_bucket_numel": 2.5}, "max_bucket_numel"),
    ErrorCase({"compile_elementwise": 3}, "compile_elementwise"),
    ErrorCase({"structure": "blocks"}, "structure"),
    ErrorCase({"structure": {"split": "heads"}}, "structure"),
)
#: Rejected by the classes with EMA momentum and a Nesterov switch.
MOMENTUM_INVALID = (
    ErrorCase({"momentum": 1.0}, "momentum"),
    ErrorCase({"momentum": -0.5}, "momentum"),
    ErrorCase({"nesterov": "yes"}, "nesterov"),
)


def _muon(
    name: str, cls: type[Optimizer], variants: tuple, invalid: tuple = (), **extra: Any
) -> OptimizerSpec:
    """A Muon-family spec: the defaults first, the shared error inputs, the reference of ``name``."""
    return OptimizerSpec(
        name=name, cls=cls, family="muon", reference=ALGORITHMS[name],
        variants=(Variant("default"), *variants), invalid=SHARED_INVALID + invalid, **extra,
    )  # fmt: skip


#: Jordan's quintic once, then the cubic Newton–Schulz step ``1.5x - 0.5x³`` (converges to 1).
CUSTOM_TABLE = [(3.4445, -4.7750, 2.0315), (1.5, -0.5, 0.0)]

# ---------------------------------------------------------------- the entries
_SPECTRAL_GRID = tuple(
    Variant(f"p{power:g}-{direction}", {"power": power, "direction": direction})
    for direction in ("adam", "momentum")
    for power in (0.0, 0.25, 0.5, 1.0)
    if (power, direction) != (0.5, "adam")  # the default
)

SPECS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        _muon("muon", Muon, (
            Variant("plain-moonlight", {"nesterov": False, "momentum": 0.9, "scale": "moonlight"}),
            Variant("paper", dict(Muon.paper_settings)),
            Variant("scale-keller", {"scale": "keller"}),
            Variant("scale-spectral", {"scale": "spectral"}),
            Variant("scale-rms", {"scale": "rms"}),
            Variant("scale-none", {"scale": "none"}),
            Variant("weight-decay", {"weight_decay": 0.1}),
            Variant("svd", {"orthogonalizer": "svd"}),
            Variant("you", {"orthogonalizer": "you"}),
            Variant("polar-express", {"orthogonalizer": "polar_express"}),
            Variant("custom-table", {"orthogonalizer": CUSTOM_TABLE, "ns_steps": 8}),
            Variant("ns-form-gram", {"ns_form": "gram"}),
            Variant("one-matrix-buckets", {"max_bucket_numel": 1}),
        ), MOMENTUM_INVALID),
        _muon("normuon", NorMuon, (
            Variant("nesterov", {"nesterov": True}),
            Variant("official", {"nesterov": True, "scale": "keller", "eps": 1e-10}),
            Variant("scale-moonlight", {"scale": "moonlight"}),
            Variant("svd", {"orthogonalizer": "svd"}),
            Variant("ns-form-fast", {"ns_form": "fast"}),
            Variant("one-matrix-buckets", {"max_bucket_numel": 1}),
        ), MOMENTUM_INVALID + (
            ErrorCase({"beta2": 1.5}, "beta2"),
            ErrorCase({"eps": 0.0}, "eps"),
        )),
        _muon("adamuon", AdaMuon, (
            Variant("muon+adam", {"sign_stabilize": False}),
            Variant("nesterov", {"nesterov": True}),
            Variant("scale-keller", {"scale": "keller"}),
            Variant("svd", {"orthogonalizer": "svd"}),
        ), MOMENTUM_INVALID + (
            ErrorCase({"sign_stabilize": 1}, "sign_stabilize"),
            ErrorCase({"eps": -1.0}, "eps"),
        )),
        _muon("muon_nsr", MuonNSR, (
            Variant("alpha1", {"alpha": 1.0}),
            Variant("alpha10-keller", {"alpha": 10.0, "scale": "keller"}),
            Variant("no-nesterov", {"nesterov": False}),
            Variant("svd", {"orthogonalizer": "svd"}),
        ), MOMENTUM_INVALID + (
            ErrorCase({"alpha": -1.0}, "alpha"),
            ErrorCase({"eps": 0.0}, "eps"),
        ), aliases=("nsr",)),
        _muon("muon_vs", MuonVS, (
            Variant("no-nesterov", {"nesterov": False}),
            Variant("scale-keller", {"scale": "keller"}),
            Variant("svd", {"orthogonalizer": "svd"}),
        ), MOMENTUM_INVALID + (ErrorCase({"eps": 0.0}, "eps"),), aliases=("vs",)),
        _muon("spectral_muon", SpectralMuon, (
            *_SPECTRAL_GRID,
            Variant("p0.25-adam-exact", {"power": 0.25, "spectral_method": "svd"}),
            Variant("p0.5-momentum-exact", {"direction": "momentum", "spectral_method": "svd"}),
            Variant("p0.5-adam-svd", {"orthogonalizer": "svd"}),
            Variant("p0-momentum-svd", {"power": 0.0, "direction": "momentum", "orthogonalizer": "svd"}),
            Variant("p0.5-scale-rms", {"scale": "rms"}),
        ), (
            ErrorCase({"power": 0.3}, "power"),
            ErrorCase({"direction": "sgd"}, "direction"),
            ErrorCase({"momentum": 1.0}, "momentum"),
            ErrorCase({"betas": (1.2, 0.9)}, "betas"),
            ErrorCase({"eps": 0.0}, "eps"),
            ErrorCase({"spectral_method": "eig"}, "spectral_method"),
            ErrorCase({"spectral_iters": 0}, "spectral_iters"),
            ErrorCase({"spectral_eps": -1.0}, "spectral_eps"),
        ), aliases=("spectral",)),
        OptimizerSpec(
            name="adamw",
            cls=torch.optim.AdamW,
            family="baseline",
            reference=ALGORITHMS["adamw"],
            variants=(
                Variant("default"),
                Variant("torch-defaults", {"betas": (0.9, 0.999), "weight_decay": 0.01}),
                Variant("no-decay", {"weight_decay": 0.0}),
            ),
            invalid=(
                ErrorCase({"lr": -1.0}, "lr", "Invalid learning rate"),
                ErrorCase({"eps": -1.0}, "eps", "Invalid epsilon value"),
                ErrorCase({"betas": (0.9, 1.0)}, "betas", "Invalid beta parameter at index 1"),
                ErrorCase({"weight_decay": -0.1}, "weight_decay", "Invalid weight_decay value"),
            ),
            settings={"betas": (0.9, 0.95), "weight_decay": 0.1},
        ),
    )
}  # fmt: skip
"""Every optimizer offered by name, in display order: the Muon family, then the AdamW baseline."""

OPTIMIZERS: dict[str, type[Optimizer]] = {
    name: spec.cls for name, spec in SPECS.items() if spec.family == "muon"
}
"""The Muon-family classes by registry name."""


def available_names(family: str | None = None) -> list[str]:
    """Registry names in display order; ``family="muon"`` or ``"baseline"`` selects one family."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"Invalid family: {family!r} (expected one of {FAMILIES} or None)")
    return [name for name, spec in SPECS.items() if family in (None, spec.family)]


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")


def _index(specs: dict[str, OptimizerSpec]) -> dict[str, OptimizerSpec]:
    """Every accepted spelling's key → its spec; two specs may never share one."""
    index: dict[str, OptimizerSpec] = {}
    for spec in specs.values():
        for alias in (spec.name, spec.cls.__name__, *spec.aliases):
            taken = index.setdefault(_key(alias), spec)
            if taken is not spec:
                raise ValueError(
                    f"Invalid alias: {alias!r} names both {taken.name} and {spec.name}"
                )
    return index


_BY_KEY = _index(SPECS)


def _valid_names() -> str:
    return ", ".join(available_names())


def _spec_of_class(cls: type) -> OptimizerSpec | None:
    return next((spec for spec in SPECS.values() if spec.cls is cls), None)


def _import_class(path: str) -> type:
    module_name, _, attr = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"Invalid optimizer name: {path!r} (a dotted path, but it cannot be imported: {err}); "
            f"registry names: {_valid_names()}"
        ) from None
    if not (isinstance(found, type) and issubclass(found, Optimizer)):
        raise ValueError(
            f"Invalid optimizer name: {path!r} (it names {found!r}, not a torch.optim.Optimizer class)"
        )
    return found


def _resolve(name: Any, import_paths: bool) -> tuple[OptimizerSpec | None, type[Optimizer]]:
    """``(spec, class)``; ``spec`` is ``None`` for an optimizer outside the registry."""
    if isinstance(name, type):
        if not issubclass(name, Optimizer):
            raise ValueError(f"Invalid optimizer: {name!r} is not a torch.optim.Optimizer class")
        cls, where = name, f"class {name.__module__}.{name.__qualname__}"
    elif isinstance(name, str) and name.strip():
        text = name.strip()
        spec = _BY_KEY.get(_key(text))
        if spec is not None:
            return spec, spec.cls
        if "." not in text:
            raise ValueError(
                f"Invalid optimizer name: {name!r} (unknown; valid names are {_valid_names()}, "
                "or their class names, case-insensitive, '-' or '_' alike)"
            )
        cls, where = _import_class(text), f"path {text!r}"
    else:
        raise ValueError(
            f"Invalid optimizer name: {name!r} (expected a registry name such as 'muon', a class "
            f"name or a dotted import path; valid names are {_valid_names()})"
        )
    spec = _spec_of_class(cls)
    if spec is not None:
        return spec, spec.cls
    if import_paths:
        return None, cls
    raise ValueError(
        f"Invalid optimizer name: the {where} is not in the registry, so it does not resolve to a "
        f"lightning_muon optimizer (those have their own defaults). Use a registry name "
        f"({_valid_names()}), or resolve with import_paths=True to take that class as it is."
    )


def spec_for(name: str | type) -> OptimizerSpec:
    """The spec of a registry name, alias, class name, dotted path to a registry class, or class.

    Raises:
        ValueError: naming the value, for anything that is not in the registry (a dotted path to
            another package's class, such as ``"torch.optim.Muon"``, included).
    """
    spec, _ = _resolve(name, import_paths=False)
    assert spec is not None
    return spec


def get_optimizer_class(name: str | type, *, import_paths: bool = False) -> type[Optimizer]:
    """The optimizer class of ``name``: the one name resolver of every configuration path.

    Registry names (``"normuon"``), aliases and class names (``"NorMuon"``) are case-insensitive
    and ``-``/``_``-blind; a dotted path or a class resolves when it *is* a registry class
    (``"lightning_muon.NorMuon"``, ``"torch.optim.AdamW"``). A dotted path to any other optimizer
    (``"torch.optim.Muon"``, whose defaults differ from :class:`lightning_muon.Muon`) raises,
    unless ``import_paths=True``: then it resolves to exactly that class, never to a look-alike.

    Raises:
        ValueError: naming the value: ``None`` or an empty name, an unknown name, a path that does
            not import or is not an optimizer class, or (without ``import_paths``) one outside the
            registry.
    """
    return _resolve(name, import_paths)[1]
