"""Muon-family optimizer classes, routing and the registry."""

from .adamuon import AdaMuon
from .base import MuonFamilyOptimizer
from .muon import Muon
from .normuon import NorMuon
from .registry import OPTIMIZERS, SPECS, available_names, get_optimizer_class, spec_for
from .routing import RoutingTable, param_groups, route_parameters
from .spec import OptimizerSpec
from .spectral import SpectralMuon
from .varmuon import MuonNSR, MuonVS

__all__ = [
    "OPTIMIZERS",
    "SPECS",
    "AdaMuon",
    "Muon",
    "MuonFamilyOptimizer",
    "MuonNSR",
    "MuonVS",
    "NorMuon",
    "OptimizerSpec",
    "RoutingTable",
    "SpectralMuon",
    "available_names",
    "get_optimizer_class",
    "param_groups",
    "route_parameters",
    "spec_for",
]
