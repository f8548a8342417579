"""Lightning integration: optimizer factory, LR schedules, ``MuonMixin`` and the live-parameter guard.

The quick-start model lives in :mod:`lightning_muon.lightning.gpt` (needs ``litgpt``); the CLI
classes in :mod:`lightning_muon.lightning.lightning_cli` (``MuonLightningCLI``) and
:mod:`lightning_muon.lightning.job` (the ``lightning-muon`` command, with
:mod:`lightning_muon.lightning.reporting`), re-exported by :mod:`lightning_muon.cli`. None of them is
imported here, so importing the package does not load Lightning's trainer.
"""

from lightning_muon.lightning.factory import (
    OptimizerConfigError,
    available_optimizers,
    available_schedules,
    build_lr_scheduler,
    build_optimizer,
    lightning_optimizer_config,
)
from lightning_muon.lightning.guard import StaleParametersError, check_live_parameters
from lightning_muon.lightning.mixin import MuonMixin
from lightning_muon.lightning.schedules import (
    WarmupConstantLR,
    WarmupCosineLR,
    WarmupLinearLR,
    WarmupStableDecayLR,
)

__all__ = [
    "MuonMixin",
    "OptimizerConfigError",
    "StaleParametersError",
    "WarmupConstantLR",
    "WarmupCosineLR",
    "WarmupLinearLR",
    "WarmupStableDecayLR",
    "available_optimizers",
    "available_schedules",
    "build_lr_scheduler",
    "build_optimizer",
    "check_live_parameters",
    "lightning_optimizer_config",
]
