"""Refuse to train with a Muon-family optimizer that does not hold the module's live parameters.

Two ways an optimizer ends up wrong without any error from PyTorch or Lightning:

* **stale parameters**: it was built before ``configure_model`` replaced the parameters (FSDP2's
  ``fully_shard`` creates new ``nn.Parameter(DTensor)`` objects). It then steps tensors nobody
  uses and training changes nothing.
* **unnamed parameters**: it was built from ``model.parameters()`` (what the stock
  ``LightningCLI --optimizer`` does), so routing saw shapes only and cannot tell an embedding or
  an output head from a hidden matrix.

:func:`check_live_parameters` detects both by comparing the optimizer's parameters and their
recorded names with ``module.named_parameters()`` (:class:`~lightning_muon.MuonMixin` calls it).
:class:`LiveParametersGuard`, which Lightning adds to every ``Trainer`` through an entry point,
checks the first (exact, on every rank together) for any module, e.g. under the stock
``LightningCLI``.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(3, 3)
    >>> stale = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3, 3))], lr=0.1)
    >>> check_live_parameters(stale, model)  # not a Muon-family optimizer: nothing to check
"""

from __future__ import annotations

from torch import nn
from torch.optim import Optimizer

from lightning_muon.distributed.flat_layout import clean_name

FIX = (
    "Build the optimizer at fit time from the module's named parameters: run the "
    "`lightning-muon` command or `lightning_muon.cli.MuonLightningCLI` instead of the stock "
    "LightningCLI (same --optimizer flags), use `lightning_muon.MuonMixin` "
    "(--model.optimizer ...), or call `lightning_muon.build_optimizer(self, ...)` inside "
    "`configure_optimizers`."
)


class StaleParametersError(RuntimeError):
    """The optimizer does not hold the module's live, named parameters."""


def check_live_parameters(optimizer: Optimizer, module: nn.Module) -> None:
    """Raise :class:`StaleParametersError` if a Muon-family ``optimizer`` was built wrongly.

    Checks that every parameter the optimizer holds is one of ``module``'s current parameters
    (object identity) and that each param group's ``"param_names"`` entry is that parameter's
    name in ``module.named_parameters()``. Optimizers outside the Muon family are not checked.
    """
    from lightning_muon.lightning.factory import is_muon_family

    if not is_muon_family(type(optimizer)):
        return
    stale = stale_parameters(optimizer, module)
    if stale:
        raise StaleParametersError(_stale_message(optimizer, module, stale))
    # FSDP1 wrappers add prefixes to the names; the optimizer records them without (flat_layout.clean_name)
    live = {id(p): clean_name(name) for name, p in module.named_parameters()}
    label = type(optimizer).__name__
    unnamed = []
    for group in optimizer.param_groups:
        names = group.get("param_names") or []
        for index, parameter in enumerate(group["params"]):
            recorded = names[index] if index < len(names) else None
            if recorded != live[id(parameter)]:
                unnamed.append(live[id(parameter)])
    if unnamed:
        listed = ", ".join(unnamed[:5]) + (", ..." if len(unnamed) > 5 else "")
        raise StaleParametersError(
            f"{label} was built without parameter names ({len(unnamed)} unnamed, e.g. {listed}), "
            "e.g. from `model.parameters()` by the stock LightningCLI, so it routed by shape only "
            "and may orthogonalize embeddings or the output head. " + FIX
        )


def stale_parameters(optimizer: Optimizer, module: nn.Module) -> list:
    """The parameters ``optimizer`` holds that are not (by identity) parameters of ``module``."""
    _reshard_fsdp2(module)
    live = {id(p) for p in module.parameters()}
    return [p for group in optimizer.param_groups for p in group["params"] if id(p) not in live]


def _stale_message(optimizer: Optimizer, module: nn.Module, stale: list) -> str:
    held = sum(len(group["params"]) for group in optimizer.param_groups)
    shapes = ", ".join(str(tuple(p.shape)) for p in stale[:5])
    return (
        f"{type(optimizer).__name__} holds {len(stale)} of {held} parameters that are not parameters of "
        f"{type(module).__name__} any more (shapes {shapes}{', ...' if len(stale) > 5 else ''}"
        "). It was built before the model's parameters were replaced (configure_model / "
        "FSDP2 fully_shard), so those would silently never train. " + FIX
    )


def _reshard_fsdp2(module: nn.Module) -> None:
    """Put FSDP2 modules back in their sharded state (what the optimizer holds).

    After a forward without backward (Lightning's sanity validation) FSDP2 leaves the root
    module's parameters unsharded until the next forward; resharding early is harmless.
    """
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return
    for submodule in module.modules():
        if isinstance(submodule, FSDPModule):
            submodule.reshard()

