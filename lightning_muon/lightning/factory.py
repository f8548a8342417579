"""Build a routed optimizer (and an optional LR schedule) for a model from a name and keyword args.

One entry point for every configuration path: the :class:`~lightning_muon.MuonMixin`, the
``MuonLightningCLI`` and hand-written ``configure_optimizers`` all call :func:`build_optimizer`, so
the parameters are always the module's live, named parameters at fit time.

* A Muon-family class receives the module itself and routes by module type and name: hidden
  matrices go to the orthogonal ("muon") branch; embeddings, the output head, norms, biases and
  scalars to the AdamW branch.
* Any other ``torch.optim.Optimizer`` receives the usual two groups: ``"decay"`` (weight matrices)
  with the given ``weight_decay`` and ``"no_decay"`` (biases, norm gains, scalars and embedding
  tables) with ``weight_decay = 0``. This is **the AdamW baseline** of every configuration path
  (``--model.optimizer adamw``, ``--optimizer AdamW``, ``python -m lightning_muon.litgpt.pretrain``
  with ``optimizer: AdamW``): ``torch.optim.AdamW`` over those two groups with the registry's
  baseline settings (``lightning_muon.optim.registry.SPECS["adamw"].settings``: ``betas=(0.9,
  0.95)``, ``weight_decay=0.1``, the usual LLM pretraining values) on top of PyTorch's other
  defaults (``lr=1e-3``, ``eps=1e-8``), unless set.

Names resolve through :func:`resolve_optimizer_class`, the one resolver of every path.

Only the hyperparameters given are passed on: a class's own defaults apply to everything else,
so no default of another optimizer can leak in.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
    >>> opt = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.1)
    >>> [(g["name"], len(g["params"]), g["weight_decay"]) for g in opt.param_groups]
    [('decay', 1, 0.1), ('no_decay', 3, 0.0)]
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lightning_muon.lightning.schedules import SCHEDULES


class OptimizerConfigError(ValueError):
    """An optimizer or schedule configuration that cannot work; raised before training starts."""


def _muon_base() -> type[Optimizer]:
    from lightning_muon.optim.base import MuonFamilyOptimizer

    return MuonFamilyOptimizer


def available_optimizers() -> dict[str, type[Optimizer]]:
    """Optimizers selectable by name: the Muon family plus the baseline ``"adamw"``.

    Names are case-insensitive in :func:`build_optimizer`; class names (``"NorMuon"``) and dotted
    import paths (``"torch.optim.SGD"``) work too.
    """
    from lightning_muon.optim.registry import SPECS

    return {name: spec.cls for name, spec in SPECS.items()}


def registry_settings(cls: type) -> dict[str, Any]:
    """The settings every configuration path applies on top of ``cls``'s own defaults: the
    registry's (``{"betas": (0.9, 0.95), "weight_decay": 0.1}`` for the AdamW baseline; empty for the
    Muon family, whose defaults are their constructor's, and for classes outside the registry)."""
    from lightning_muon.optim.registry import spec_for

    try:
        return dict(spec_for(cls).settings)
    except ValueError:
        return {}


def is_muon_family(cls: type) -> bool:
    """Whether ``cls`` is one of the routed Muon-family optimizers."""
    return isinstance(cls, type) and issubclass(cls, _muon_base())


def canonical_class_path(cls: type) -> str:
    """The shortest import path of an optimizer class: ``lightning_muon.NorMuon``,
    ``torch.optim.AdamW``, else ``module.QualName``."""
    # the top-level package is imported before any of its subpackages: read it, don't import it
    for package, module in (
        ("lightning_muon", sys.modules["lightning_muon"]),
        ("torch.optim", torch.optim),
    ):
        if getattr(module, cls.__name__, None) is cls:
            return f"{package}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def optimizer_names_hint() -> str:
    """The optimizer names every configuration path accepts, for error messages."""
    return (
        f"Valid names: {', '.join(sorted(available_optimizers()))} (case-insensitive), class "
        "names (NorMuon, AdamW, SGD, ...) and dotted paths (lightning_muon.NorMuon, torch.optim.Muon)."
    )


def resolve_optimizer_class(name_or_class: str | type[Optimizer]) -> type[Optimizer]:
    """Turn a name, class name, dotted path or class into an optimizer class: the one resolver
    behind ``--optimizer``, ``--model.optimizer`` and the litgpt recipes' ``optimizer:``.

    In order: an ``Optimizer`` subclass is returned as is; a dotted path is imported exactly
    (``"torch.optim.Muon"`` is PyTorch's Muon, ``"lightning_muon.Muon"`` this package's); a
    baseline name (``"adamw"``) or a Muon-family name or class name (``"normuon"``, ``"muon-nsr"``,
    ``"NorMuon"``, ``"Muon"``) comes from the registry (case-insensitive); any other bare name is
    looked up in ``torch.optim`` (``"SGD"``).

    Example:
        >>> resolve_optimizer_class("normuon").__name__, resolve_optimizer_class("torch.optim.Muon").__module__
        ('NorMuon', 'torch.optim')

    Raises:
        OptimizerConfigError: Unknown name (the message lists the valid ones) or not an optimizer.
    """
    if isinstance(name_or_class, type):
        if not issubclass(name_or_class, Optimizer):
            raise OptimizerConfigError(
                f"optimizer={name_or_class!r} is not a torch.optim.Optimizer subclass."
            )
        return name_or_class
    if not isinstance(name_or_class, str) or not name_or_class.strip():
        raise OptimizerConfigError(
            f"optimizer must be a name or an Optimizer class, got {name_or_class!r}. "
            + optimizer_names_hint()
        )
    from lightning_muon.optim.registry import get_optimizer_class

    name = name_or_class.strip()
    try:
        return get_optimizer_class(name, import_paths=True)
    except ValueError:
        cls = None if "." in name else getattr(torch.optim, name, None)
        if isinstance(cls, type) and issubclass(cls, Optimizer):
            return cls
    raise OptimizerConfigError(f"Unknown optimizer {name_or_class!r}. " + optimizer_names_hint())


def accepted_hparams(cls: type) -> set[str] | None:
    """Keyword arguments ``cls.__init__`` accepts besides ``params`` (``None``: any, via ``**``)."""
    signature = inspect.signature(cls.__init__)
    names = set()
    for parameter in list(signature.parameters.values())[1:]:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if parameter.kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            names.add(parameter.name)
    names.discard("params")
    return names


def check_hparams(cls: type, hparams: Mapping[str, Any], what: str = "") -> None:
    """Raise :class:`OptimizerConfigError` naming every key of ``hparams`` that ``cls`` rejects."""
    accepted = accepted_hparams(cls)
    if accepted is None:
        return
    unknown = sorted(set(hparams) - accepted)
    if unknown:
        raise OptimizerConfigError(
            f"{what or cls.__name__} does not accept {', '.join(map(repr, unknown))}. "
            f"Accepted: {', '.join(sorted(accepted))}."
        )


def _construct(cls: type, first: Any, hparams: dict[str, Any]) -> Any:
    try:
        return cls(first, **hparams)
    except (TypeError, ValueError) as error:
        if isinstance(error, OptimizerConfigError):
            raise
        message = str(error)
        prefix = "" if message.startswith(cls.__name__) else f"{cls.__name__}: "
        raise OptimizerConfigError(prefix + message) from error


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The AdamW baseline's split: ``"decay"`` (weight matrices) and ``"no_decay"`` (biases, norm
    gains, scalars: ``ndim < 2``; and the weights of ``nn.Embedding`` modules).

    Only parameters with ``requires_grad`` are included; empty groups are dropped. Each group has
    ``"name"`` (read by ``LearningRateMonitor``) and ``"param_names"``.
    """
    groups: dict[str, dict[str, Any]] = {
        "decay": {"params": [], "param_names": [], "weight_decay": weight_decay, "name": "decay"},
        "no_decay": {"params": [], "param_names": [], "weight_decay": 0.0, "name": "no_decay"},
    }
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            decays = parameter.ndim >= 2 and not isinstance(module, nn.Embedding)
            group = groups["decay" if decays else "no_decay"]
            group["params"].append(parameter)
            group["param_names"].append(f"{module_name}.{name}" if module_name else name)
    return [group for group in groups.values() if group["params"]]


def build_optimizer(
    model: nn.Module, name_or_class: str | type[Optimizer] = "muon", **hparams: Any
) -> Optimizer:
    """Build one optimizer over ``model``'s live, named parameters.

    Args:
        model: The module to optimize (a ``LightningModule`` works; call this at fit time, after
            ``configure_model``, e.g. inside ``configure_optimizers``).
        name_or_class: A name from :func:`available_optimizers`, a class name, a dotted path or an
            optimizer class.
        **hparams: Constructor arguments of that class (only these are passed on).

    Returns:
        The optimizer. Muon-family optimizers hold a ``"muon"`` and an ``"adamw"`` param group.

    Raises:
        OptimizerConfigError: Unknown optimizer, rejected hyperparameters or values, a model
            without trainable parameters, or a Muon-family optimizer for a model with no matrix
            parameter its orthogonal branch can take.
    """
    cls = resolve_optimizer_class(name_or_class)
    check_hparams(cls, hparams)
    hparams = {**registry_settings(cls), **hparams}
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise OptimizerConfigError(
            f"{type(model).__name__} has no trainable parameters to optimize with {cls.__name__}."
        )
    if is_muon_family(cls):
        return _construct(cls, model, dict(hparams))
    accepted = accepted_hparams(cls)
    if accepted is not None and "weight_decay" not in accepted:
        return _construct(cls, model.parameters(), hparams)
    weight_decay = hparams.pop("weight_decay", _default_of(cls, "weight_decay", 0.0))
    return _construct(cls, decay_param_groups(model, weight_decay), hparams)


def describe_settings(cls: type, given: Mapping[str, Any]) -> str:
    """One line saying which learning rate and weight decay ``cls`` runs with, and where each
    value comes from (given, or the class's own default).

    Example:
        >>> describe_settings(torch.optim.AdamW, {"lr": 3e-3})
        'AdamW: lr=0.003 (given), weight_decay=0.1 (the adamw baseline), betas=(0.9, 0.95) (the adamw baseline)'
    """
    parameters = inspect.signature(cls.__init__).parameters
    settings = registry_settings(cls)
    parts = []
    for key in ("lr", "weight_decay", "betas"):
        if key in given:
            parts.append(f"{key}={given[key]!r} (given)")
        elif key in settings:
            parts.append(f"{key}={settings[key]!r} (the adamw baseline)")
        elif key in parameters and parameters[key].default is not inspect.Parameter.empty:
            parts.append(f"{key}={parameters[key].default!r} ({cls.__name__}'s default)")
    return f"{cls.__name__}: " + ", ".join(parts)


def _default_of(cls: type, name: str, fallback: Any) -> Any:
    parameter = inspect.signature(cls.__init__).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return fallback
    return parameter.default


def available_schedules() -> dict[str, type[LRScheduler]]:
    """Learning-rate schedules selectable by name (see :mod:`lightning_muon.lightning.schedules`)."""
    return dict(SCHEDULES)


def build_lr_scheduler(
    optimizer: Optimizer, name: str, total_steps: int | None, **kwargs: Any
) -> LRScheduler:
    """Build the schedule ``name`` (``"constant"``, ``"cosine"``, ``"linear"``, ``"wsd"``).

    Raises:
        OptimizerConfigError: Unknown name, rejected keyword arguments or invalid values.
    """
    key = name.lower().strip() if isinstance(name, str) else name
    if key not in SCHEDULES:
        raise OptimizerConfigError(
            f"Unknown lr_schedule {name!r}. Valid: {', '.join(sorted(SCHEDULES))}."
        )
    cls = SCHEDULES[key]
    check_hparams(cls, kwargs, what=f"lr_schedule={key!r}")
    try:
        return cls(optimizer, total_steps=total_steps, **kwargs)
    except ValueError as error:
        raise OptimizerConfigError(str(error)) from error


def lightning_optimizer_config(
    optimizer: Optimizer, scheduler: LRScheduler | None = None
) -> dict[str, Any]:
    """``configure_optimizers``' return value: the optimizer and a per-step scheduler."""
    if scheduler is None:
        return {"optimizer": optimizer}
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
