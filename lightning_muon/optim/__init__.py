"""Muon-family optimizer classes, routing and the registry."""

from .adamuon import AdaMuon
from .base import MuonFamilyOptimizer
from .muon import Muon
from .normuon import NorMuon
from .registry import OPTIMIZERS, get_optimizer_class
from .routing import RoutingTable, param_groups, route_parameters
from .spectral import SpectralMuon
from .varmuon import MuonNSR, MuonVS

__all__ = [
    "OPTIMIZERS",
    "AdaMuon",
    "Muon",
    "MuonFamilyOptimizer",
    "MuonNSR",
    "MuonVS",
    "NorMuon",
    "RoutingTable",
    "SpectralMuon",
    "get_optimizer_class",
    "param_groups",
    "route_parameters",
]
