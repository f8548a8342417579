"""Routing of FSDP1 flat views: original names, shapes and module types from FSDP's metadata.

Under ``FullyShardedDataParallel(use_orig_params=True)`` (Lightning's and Fabric's ``FSDPStrategy``,
``litgpt pretrain --devices N``) every parameter an optimizer receives is a 1-D slice, and
``model.parameters()`` carries no names. :func:`route_flat` recovers each parameter's original name
(wrapper prefixes removed), shape and owning module from the live FSDP instances
(:func:`~lightning_muon.distributed.flat_layout.flat_slices`) and routes exactly as for the unwrapped
model: embeddings, norm layers, output heads (by name, or the last ``nn.Linear`` projecting to the
vocabulary) and 1-D parameters go to AdamW, hidden matrices to the orthogonal branch. No tags needed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..distributed.flat_layout import FlatSlice, flat_slices, is_flat_parameter, is_flat_view
from .routing import (
    _HEAD_NAMES,
    _NORM_TYPES,
    BRANCHES,
    RouteEntry,
    RoutingTable,
    _explicit_branch,
    _name_reason,
)


def _tensors(params: Any) -> list[torch.Tensor]:
    if isinstance(params, nn.Module):
        return list(params.parameters())
    out = []
    for item in params:
        if isinstance(item, dict):  # a group: tensors or (name, tensor) pairs
            group = item.get("params", [])
            out += _tensors([group] if isinstance(group, torch.Tensor) else list(group))
        elif isinstance(item, tuple) and len(item) == 2:
            out.append(item[1])
        elif isinstance(item, torch.Tensor):
            out.append(item)
    return out


def uses_flat_parameters(params: Any) -> bool:
    """Whether ``params`` (a module, tensors, pairs or groups) holds FSDP1 flat views or flat parameters."""
    return any(is_flat_view(p) or is_flat_parameter(p) for p in _tensors(params))


def _reason(s: FlatSlice, vocab_head: nn.Module | None, vocab_size: int | None) -> tuple[str, str]:
    module = s.module
    if len(s.shape) < 2:
        return "adamw", "1-D or scalar (bias, norm gain or scalar)"
    if isinstance(module, nn.Embedding | nn.EmbeddingBag):
        return "adamw", "embedding"
    if isinstance(module, _NORM_TYPES):
        return "adamw", "normalisation layer"
    if isinstance(module, nn.Linear):
        if s.name.split(".")[-2:-1] and s.name.split(".")[-2] in _HEAD_NAMES:
            return "adamw", "output head (by name)"
        if module is vocab_head:
            return "adamw", "output head (projects to the vocabulary)"
    return _name_reason(s.name, torch.empty(s.shape, device="meta"), vocab_size)


def route_flat(
    params: Any, vocab_size: int | None = None
) -> tuple[list[dict[str, Any]], RoutingTable, dict[int, FlatSlice]]:
    """Param groups, routing table and flat slices (by ``id``) for FSDP1 flat views.

    ``params`` is a module, ``named_parameters()``, tensors, or group dicts (a group's ``branch``
    or ``use_muon`` is kept). Names given with the parameters are only used when FSDP has none.
    """
    tensors = _tensors(params)
    slices = flat_slices(tensors)
    if len(slices) != len({id(p) for p in tensors}):
        raise ValueError(
            "the optimizer got FSDP1 flat views mixed with other parameters; build it from one "
            "FullyShardedDataParallel model's parameters"
        )
    modules = [s.module for s in slices.values()]
    tables = [m.num_embeddings for m in modules if isinstance(m, nn.Embedding | nn.EmbeddingBag)]
    vocab = vocab_size if vocab_size is not None else (max(tables) if tables else None)
    to_vocab = [m for m in modules if isinstance(m, nn.Linear) and m.out_features == vocab]
    vocab_head = to_vocab[-1] if to_vocab else None

    items = (
        params if isinstance(params, list) and all(isinstance(x, dict) for x in params) else None
    )
    groups_in = items if items else [{"params": tensors}]
    out: list[dict[str, Any]] = []
    entries: list[RouteEntry] = []
    seen: set[int] = set()
    for index, group in enumerate(groups_in):
        plist = group["params"]
        plist = [plist] if isinstance(plist, torch.Tensor) else list(plist)
        extra = {
            k: v
            for k, v in group.items()
            if k not in ("params", "param_names", "branch", "use_muon", "name")
        }
        explicit = _explicit_branch(group, index) if items else None
        routes = []
        for p in plist:
            if id(p) in seen:
                continue
            seen.add(id(p))
            s = slices[id(p)]
            branch, reason = (
                (explicit, "explicit group") if explicit else _reason(s, vocab_head, vocab_size)
            )
            routes.append((s.name, p, branch, reason))
        for b in BRANCHES:
            selected = [(n, p) for n, p, br, _ in routes if br == b]
            if selected:
                out.append({
                    **extra, "params": [p for _, p in selected], "param_names": [n for n, _ in selected],
                    "branch": b, "name": group.get("name", b),
                })  # fmt: skip
        entries += [RouteEntry(n, slices[id(p)].shape, b, r) for n, p, b, r in routes]
    return out, RoutingTable(entries), slices


def print_routing(owner: str, table: RoutingTable) -> None:
    """Print the routing table once (global rank 0): flat views give no other way to see the routing."""
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(f"{owner} routing of the FSDP1 parameters:\n{table}", flush=True)
