"""Param groups added after construction go through the constructor's routing and checks.

:func:`add_param_group` is what ``optimizer.add_param_group(group)`` runs on a Muon-family
optimizer. It accepts what torch's optimizers accept (``{"params": [p, ...]}``, ``(name, tensor)``
pairs in ``"params"``, per-group hyperparameters) and what the constructor accepts (``"branch"``,
``"use_muon"``, ``"param_names"``), then:

1. routes the group as the constructor would (an explicit branch wins; otherwise names, else
   shapes and the ``vocab_size`` hint), which may split it into a ``muon`` and an ``adamw`` group;
2. fills the optimizer's defaults and checks every hyperparameter and every tensor exactly as the
   constructor does (``lr=-1``, ``momentum=2.0``, ``branch="bogus"``, a 1-D tensor in a matrix
   group, a parameter already in another group: all refused with the parameter and the value);
3. only then appends the group(s) and records the routing decisions in ``optimizer.routing``.

Nothing is changed when a check fails. Lightning's ``BaseFinetuning.unfreeze_and_add_param_group``
(plain tensors, an ``lr``) therefore works as it does with ``torch.optim.AdamW``.

Example:
    >>> import torch, torch.nn as nn
    >>> from lightning_muon import Muon
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    >>> opt = Muon(list(model[1].named_parameters(prefix="1")))
    >>> opt.add_param_group({"params": list(model[2].named_parameters(prefix="2")), "lr": 0.01})
    >>> [(g["branch"], g["param_names"]) for g in opt.param_groups[2:]]
    [('muon', ['2.weight']), ('adamw', ['2.bias'])]
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from .routing import RouteEntry, route_parameters
from .structure import resolve, spec_for


def check_param_group(optimizer: Any, group: dict[str, Any], where: str) -> None:
    """The constructor's checks of one complete group: hyperparameters, then every tensor."""
    label = type(optimizer).__name__
    optimizer._validate_group(group, where)
    names = group.get("param_names") or []
    flat = optimizer.__dict__.get("_flat_slices")  # FSDP1 flat views: their original shapes
    for i, p in enumerate(group["params"]):
        name = names[i] if i < len(names) else f"<parameter of shape {tuple(p.shape)}>"
        if flat is not None and id(p) not in flat:
            raise ValueError(
                f"{label}: {name} is not a view of the FSDP1 flat parameters this optimizer was built "
                f"on; build the optimizer again over the wrapped model's parameters{where}"
            )
        shape = flat[id(p)].shape if flat is not None else tuple(p.shape)
        if not isinstance(p, torch.Tensor):
            raise TypeError(
                f"{label} can only optimize Tensors, but {name} is a {torch.typename(p)}{where}"
            )
        if not (p.is_leaf or p.retains_grad):
            raise ValueError(f"{label} can't optimize a non-leaf Tensor: {name}{where}")
        if group["branch"] == "muon" and len(shape) < 2:
            raise ValueError(
                f"{label}: parameter {name} of shape {shape} is in a branch='muon' group but is "
                f"not a matrix; put 1-D parameters in a branch='adamw' group{where}"
            )
        if p.is_complex():
            raise ValueError(f"{label} does not support complex parameters: {name}{where}")
        if group["branch"] == "muon":
            check_structure_of(label, group.get("structure", "flatten"), name, p, shape, flat, where)


def check_structure_of(
    label: str, value: Any, name: str, p: torch.Tensor, shape: tuple, flat: Any, where: str
) -> None:
    """A parameter's ``structure`` fits its shape, and its blocks can be updated where it lives:
    plain tensors, DDP replicas and DTensors on any mesh, not FSDP1 flat slices."""
    try:
        blocking = resolve(value, name, shape)
    except ValueError as err:
        raise ValueError(f"{label}: {err}{where}") from None
    if blocking is not None and flat is not None:
        raise ValueError(
            f"{label}: {name} has structure {spec_for(value, name)!r}, but it is an FSDP1 flat "
            "slice; row blocks are updated on plain tensors, DDP replicas and DTensors (FSDP2, "
            f"tensor parallelism). Use structure='flatten' for it, or FSDP2{where}"
        )


def _normalised(optimizer: Any, param_group: Any) -> tuple[dict[str, Any], bool]:
    """A copy of ``param_group`` with ``params`` a list of tensors and names split off pairs,
    and whether the caller gave names (else they are generated)."""
    if not isinstance(param_group, dict):
        raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
    if "params" not in param_group:
        raise ValueError("param_group has no 'params' entry")
    params = param_group["params"]
    if isinstance(params, torch.Tensor):
        params = [params]
    elif isinstance(params, set):
        raise TypeError(
            "optimizer parameters need to be organized in ordered collections, but the ordering of "
            "tensors in sets will change between runs. Please use a list instead."
        )
    else:
        params = list(params)
    if not params:
        raise ValueError("param_group has an empty 'params' list")
    group = dict(param_group)
    pairs = [isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in params]
    if any(pairs):
        if not all(pairs):
            raise ValueError("all params of a param group should be with or without names")
        group["param_names"] = [name for name, _ in params]
        params = [tensor for _, tensor in params]
    group["params"] = params
    named = "param_names" in group
    if not named:
        start = len(optimizer.param_groups)
        group["param_names"] = [f"group{start}.param{i}" for i in range(len(params))]
    return group, named


def add_param_group(optimizer: Any, param_group: Any) -> None:
    """Route, complete and check ``param_group``, then add it (see the module docstring)."""
    label = type(optimizer).__name__
    group, named = _normalised(optimizer, param_group)
    if (
        named and "branch" not in group and "use_muon" not in group
    ):  # names given: route by name, as the constructor does for named_parameters()
        pairs = list(zip(group["param_names"], group["params"], strict=True))
        extra = {k: v for k, v in group.items() if k not in ("params", "param_names", "name")}
        routed, table = route_parameters(pairs, optimizer.__dict__.get("vocab_size"))
        groups = [{**extra, **g, "name": group.get("name", g["name"])} for g in routed]
    else:
        groups, table = route_parameters([group], optimizer.__dict__.get("vocab_size"))
    existing = {p for g in optimizer.param_groups for p in g["params"]}
    seen: set[torch.Tensor] = set()
    for k, routed_group in enumerate(groups):
        for name, default in optimizer.defaults.items():
            routed_group.setdefault(name, default)
        where = f" (added param group {len(optimizer.param_groups) + k})"
        check_param_group(optimizer, routed_group, where)
        for name, p in zip(routed_group["param_names"], routed_group["params"], strict=True):
            if p in existing or p in seen:
                raise ValueError(
                    f"{label}: parameter {name} appears in more than one param group{where}"
                )
            seen.add(p)
    for routed_group in groups:
        Optimizer.add_param_group(optimizer, routed_group)
    routing = optimizer.__dict__.get("routing")
    if routing is not None:
        routing.entries += [RouteEntry(e.name, e.shape, e.branch, e.reason) for e in table.entries]
