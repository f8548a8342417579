"""The Lightning callback that refuses to train a Muon-family optimizer holding stale parameters.

Lightning adds it to every ``Trainer`` through this package's ``lightning.pytorch.callbacks_factory``
entry point (:func:`callbacks_factory`); the checks themselves are in
:mod:`lightning_muon.lightning.guard`, which does not import Lightning's trainer.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback
from torch import nn

from lightning_muon.lightning.guard import (
    FIX,
    StaleParametersError,
    _stale_message,
    stale_parameters,
)


class LiveParametersGuard(Callback):
    """Refuse to train when a Muon-family optimizer holds parameters the module no longer has.

    Added to every ``Trainer`` through Lightning's ``lightning.pytorch.callbacks_factory`` entry
    point, so it also covers the stock ``LightningCLI --optimizer`` (which builds the optimizer
    from ``model.parameters()`` before ``configure_model``) and modules without
    :class:`~lightning_muon.MuonMixin`. At the start of training every rank compares the
    optimizer's parameters with the module's (object identity, exact) and the ranks decide
    together: if any rank finds a stale parameter, every rank raises :class:`StaleParametersError`
    (none is left waiting in a collective). Other optimizers are not checked.
    """

    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        from lightning_muon.lightning.factory import is_muon_family

        found = ""
        for optimizer in trainer.optimizers:
            if is_muon_family(type(optimizer)):
                stale = stale_parameters(optimizer, pl_module)
                if stale:
                    found = _stale_message(optimizer, pl_module, stale)
                    break
        if trainer.strategy.reduce_boolean_decision(bool(found), all=False):
            raise StaleParametersError(
                found
                or "another process found a Muon-family optimizer holding stale parameters. " + FIX
            )


def callbacks_factory() -> list[Callback]:
    """The entry point Lightning loads for every ``Trainer`` (``lightning.pytorch.callbacks_factory``)."""
    return [LiveParametersGuard()]
