"""lightning_muon: the Muon family of optimizers for PyTorch Lightning, Fabric and litgpt.

Example:
    >>> import torch, torch.nn as nn
    >>> import lightning_muon as lm
    >>> model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 16), nn.Linear(16, 50))
    >>> opt = lm.NorMuon(model, lr=1e-3)
    >>> opt.routing.names("muon")
    ['1.weight']
"""

from . import lightning as _lightning
from . import optim as _optim
from .lightning import (  # noqa: F401  (the Lightning integration)
    MuonMixin,
    OptimizerConfigError,
    StaleParametersError,
    WarmupConstantLR,
    WarmupCosineLR,
    WarmupLinearLR,
    WarmupStableDecayLR,
    available_optimizers,
    build_optimizer,
    check_live_parameters,
)
from .optim import *  # noqa: F403  (the optimizers, their registry and routing)
from .optim import OPTIMIZERS

__version__ = "0.1.0"

__all__ = [*_optim.__all__, *(name for name in _lightning.__all__ if name in globals())]


def __getattr__(name: str) -> object:
    """Name the optimizers when a config's ``class_path`` misspells one (``lightning_muon.NorMoun``)."""
    if name.startswith("__"):
        raise AttributeError(f"module 'lightning_muon' has no attribute {name!r}")
    raise AttributeError(
        f"module 'lightning_muon' has no attribute {name!r}; its optimizers are "
        + ", ".join(sorted(cls.__name__ for cls in OPTIMIZERS.values()))
    )
