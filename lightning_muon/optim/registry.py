"""The registry of Muon-family optimizers, by short name and class name.

Example:
    >>> get_optimizer_class("NorMuon").__name__
    'NorMuon'
    >>> sorted(OPTIMIZERS)
    ['adamuon', 'muon', 'muon_nsr', 'muon_vs', 'normuon', 'spectral_muon']
"""

from __future__ import annotations

from .adamuon import AdaMuon
from .base import MuonFamilyOptimizer
from .muon import Muon
from .normuon import NorMuon
from .spectral import SpectralMuon
from .varmuon import MuonNSR, MuonVS

OPTIMIZERS: dict[str, type[MuonFamilyOptimizer]] = {
    cls.algorithm: cls for cls in (Muon, NorMuon, AdaMuon, MuonNSR, MuonVS, SpectralMuon)
}


def _normalise(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


def get_optimizer_class(name: str) -> type[MuonFamilyOptimizer]:
    """The class for a short name (``"normuon"``, ``"muon-nsr"``) or class name (``"NorMuon"``); case-insensitive."""
    key = _normalise(name.rsplit(".", 1)[-1])
    by_class = {_normalise(cls.__name__): cls for cls in OPTIMIZERS.values()}
    if key in OPTIMIZERS:
        return OPTIMIZERS[key]
    if key in by_class:
        return by_class[key]
    if key.replace("_", "") in {k.replace("_", "") for k in OPTIMIZERS}:
        return next(
            cls for k, cls in OPTIMIZERS.items() if k.replace("_", "") == key.replace("_", "")
        )
    raise ValueError(
        f"Unknown optimizer: {name!r}; valid names are {', '.join(sorted(OPTIMIZERS))}"
    )
