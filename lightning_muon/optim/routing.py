"""Parameter routing: which parameters the orthogonal (Muon) branch takes and which go to AdamW.

Muon-family updates are meant for *hidden* weight matrices. Embeddings, output heads (tied or
not), normalisation gains, biases and scalars go to AdamW. Routing uses as much structure as the
input carries:

* an ``nn.Module``: module types (``nn.Embedding``, norm layers, ``nn.Linear`` heads, the first
  convolution), tied weights and names;
* ``named_parameters()`` pairs: names (``wte``, ``embed_tokens``, ``lm_head``, ``classifier``, …),
  tied tensors (visible only with ``named_parameters(remove_duplicate=False)``) and shapes;
* plain tensors: shapes only (warns: embeddings and heads cannot be recognised, except through the
  ``vocab_size`` hint);
* group dicts marking their branch (``{"params": [...], "branch": "muon" | "adamw"}``; KJ-style
  ``use_muon=True/False`` is accepted too).

Every decision is recorded in a :class:`RoutingTable` with its reason.

Example:
    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Embedding(100, 16), nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 100))
    >>> groups, table = route_parameters(model)
    >>> [(g["branch"], g["param_names"]) for g in groups]  # doctest: +NORMALIZE_WHITESPACE
    [('muon', ['1.weight']), ('adamw', ['0.weight', '1.bias', '2.weight', '2.bias', '3.weight', '3.bias'])]
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

BRANCHES = ("muon", "adamw")

_EMBEDDING_NAME = re.compile(
    r"(^|[._])(wte|wpe|emb|embed\w*|\w*embeddings?|tok_embeddings|word_embeddings)([._]|$)"
)
_HEAD_NAMES = frozenset(
    {"lm_head", "head", "classifier", "output_layer", "fc_out", "score", "logits"}
)
_NORM_NAME = re.compile(r"(^|[._])(\w*norm\w*|ln\w*)([._]|$)")
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class RouteEntry:
    """One routing decision."""

    name: str
    shape: tuple[int, ...]
    branch: str
    reason: str


class RoutingTable:
    """Which parameter went to which branch, and why. ``str(table)`` renders an aligned table."""

    def __init__(self, entries: Iterable[RouteEntry] = ()) -> None:
        self.entries: list[RouteEntry] = list(entries)

    def branch_of(self, name: str) -> str:
        """The branch of the parameter called ``name``."""
        for entry in self.entries:
            if entry.name == name:
                return entry.branch
        raise KeyError(f"no parameter named {name!r} in the routing table")

    def names(self, branch: str) -> list[str]:
        """Names routed to ``branch``, in order."""
        return [e.name for e in self.entries if e.branch == branch]

    def __len__(self) -> int:
        return len(self.entries)

    def __str__(self) -> str:
        rows = [("parameter", "shape", "branch", "reason")]
        rows += [
            (e.name, "x".join(map(str, e.shape)) or "scalar", e.branch, e.reason)
            for e in self.entries
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [
            f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows
        ]
        counts = {b: sum(e.branch == b for e in self.entries) for b in BRANCHES}
        lines.append(f"{counts['muon']} parameters on the muon branch, {counts['adamw']} on adamw")
        return "\n".join(lines)

    __repr__ = __str__


def _reject_fsdp1(names: Iterable[str], model: nn.Module | None = None) -> None:
    flat = [n for n in names if "_fsdp_wrapped_module" in n or "_flat_param" in n]
    is_fsdp1 = bool(flat)
    if model is not None and not is_fsdp1:
        from torch.distributed.fsdp import FullyShardedDataParallel

        is_fsdp1 = any(isinstance(m, FullyShardedDataParallel) for m in model.modules())
    if is_fsdp1:
        raise ValueError(
            "FSDP1 (FullyShardedDataParallel / Lightning's FSDPStrategy) flattens parameters into 1-D shards, "
            "so Muon-family optimizers cannot see their matrices. Use FSDP2 instead: Lightning's "
            "ModelParallelStrategy (apply torch.distributed.fsdp.fully_shard in configure_model), Fabric's "
            "ModelParallelStrategy, or plain fully_shard; on one device use no sharding strategy. "
            "`litgpt pretrain` uses FSDP1 on more than one device: run the same recipe with "
            "`python -m lightning_muon.litgpt.pretrain --config <recipe.yaml> --devices <N>` "
            "(FSDP2, routing by parameter name), or with `litgpt pretrain --devices 1`."
        )


def _is_vocab_shaped(p: torch.Tensor, vocab_size: int | None) -> bool:
    return vocab_size is not None and p.ndim >= 2 and vocab_size in tuple(p.shape[:2])


def _name_reason(name: str, p: torch.Tensor, vocab_size: int | None) -> tuple[str, str]:
    """Route by name and shape."""
    if p.ndim < 2:
        return "adamw", "1-D or scalar (bias, norm gain or scalar)"
    parts = name.split(".")
    if _EMBEDDING_NAME.search(name) or any(
        part.endswith("_token") or part == "token" for part in parts
    ):
        return "adamw", "embedding (by name)"
    if any(part in _HEAD_NAMES for part in parts):
        return "adamw", "output head (by name)"
    if _NORM_NAME.search(name):
        return "adamw", "normalisation layer (by name)"
    if _is_vocab_shaped(p, vocab_size):
        return "adamw", f"embedding or head (a dimension equals vocab_size={vocab_size})"
    return "muon", "hidden matrix"


def _module_routes(
    model: nn.Module, vocab_size: int | None
) -> list[tuple[str, torch.Tensor, str, str]]:
    modules = dict(model.named_modules())
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    first_name: dict[int, str] = {}
    order: list[torch.Tensor] = []
    for mod_name, mod in modules.items():
        for pname, p in mod.named_parameters(recurse=False):
            key = id(p)
            if key not in first_name:
                first_name[key] = f"{mod_name}.{pname}" if mod_name else pname
                order.append(p)
            owners.setdefault(key, []).append((mod_name, mod))
    _reject_fsdp1(first_name.values(), model)

    # The token vocabulary is the largest embedding table (position tables are smaller), or the hint.
    tables = [
        m.num_embeddings for m in modules.values() if isinstance(m, nn.Embedding | nn.EmbeddingBag)
    ]
    vocab_sizes = {max(tables)} if tables else set()
    if vocab_size is not None:
        vocab_sizes = {vocab_size}
    linears = [name for name, m in modules.items() if isinstance(m, nn.Linear)]
    # The vocabulary head is the *last* Linear projecting to the vocabulary (an MLP whose width
    # happens to equal the vocabulary size comes earlier).
    to_vocab = [name for name in linears if modules[name].out_features in vocab_sizes]
    vocab_head = to_vocab[-1] if to_vocab else None
    convs = [name for name, m in modules.items() if isinstance(m, _CONV_TYPES)]
    has_named_head = any(name.split(".")[-1] in _HEAD_NAMES for name in linears)
    last_linear = linears[-1] if linears and not vocab_sizes and not has_named_head else None

    routes = []
    for p in order:
        name = first_name[id(p)]
        mods = owners[id(p)]
        types = [m for _, m in mods]
        if p.ndim < 2:
            branch, reason = "adamw", "1-D or scalar (bias, norm gain or scalar)"
        elif any(isinstance(m, nn.Embedding | nn.EmbeddingBag) for m in types):
            tied = len(mods) > 1
            branch, reason = "adamw", "embedding (tied to the output head)" if tied else "embedding"
        elif any(isinstance(m, _NORM_TYPES) for m in types):
            branch, reason = "adamw", "normalisation layer"
        elif any(n.split(".")[-1] in _HEAD_NAMES for n, m in mods if isinstance(m, nn.Linear)):
            branch, reason = "adamw", "output head (by name)"
        elif any(n == vocab_head for n, _ in mods):
            branch, reason = "adamw", "output head (projects to the vocabulary)"
        elif last_linear is not None and any(n == last_linear for n, _ in mods):
            branch, reason = "adamw", "output layer (the model's last nn.Linear)"
        elif convs and any(n == convs[0] for n, _ in mods):
            branch, reason = "adamw", "input layer (the model's first convolution)"
        elif any(isinstance(m, _CONV_TYPES) for m in types):
            branch, reason = "muon", "convolution, flattened to (out, in*k...)"
        elif any(isinstance(m, nn.Linear) for m in types):
            branch, reason = "muon", "hidden matrix"
        else:  # a free parameter of a custom module (e.g. pos_embedding, cls_token): its name decides
            branch, reason = _name_reason(name, p, vocab_size)
        routes.append((name, p, branch, reason))
    return routes


def _named_routes(
    pairs: list[tuple[str, torch.Tensor]], vocab_size: int | None
) -> list[tuple[str, torch.Tensor, str, str]]:
    _reject_fsdp1(name for name, _ in pairs)
    seen: dict[int, str] = {}
    tied: set[int] = set()
    unique: list[tuple[str, torch.Tensor]] = []
    for name, p in pairs:
        if id(p) in seen:
            tied.add(id(p))
            continue
        seen[id(p)] = name
        unique.append((name, p))
    routes = []
    for name, p in unique:
        if id(p) in tied and p.ndim >= 2:
            routes.append((name, p, "adamw", "tied weight (embedding shared with the output head)"))
        else:
            routes.append((name, p, *_name_reason(name, p, vocab_size)))
    return routes


def _shape_routes(
    tensors: list[torch.Tensor], vocab_size: int | None, prefix: str
) -> list[tuple[str, torch.Tensor, str, str]]:
    routes = []
    for i, p in enumerate(tensors):
        name = f"{prefix}{i}"
        if p.ndim < 2:
            routes.append((name, p, "adamw", "1-D or scalar (bias, norm gain or scalar)"))
        elif _is_vocab_shaped(p, vocab_size):
            routes.append(
                (
                    name,
                    p,
                    "adamw",
                    f"embedding or head (a dimension equals vocab_size={vocab_size})",
                )
            )
        else:
            routes.append((name, p, "muon", "matrix (routed by shape only)"))
    return routes


def _warn_shape_only() -> None:
    warnings.warn(
        "Muon-family optimizer got plain tensors: routing by shape only, so embeddings and output heads "
        "cannot be recognised and go to the Muon branch. Pass the model, model.named_parameters(), or "
        "vocab_size=<vocabulary size> to route them to AdamW.",
        UserWarning,
        stacklevel=4,
    )


def _explicit_branch(group: dict[str, Any], index: int) -> str | None:
    if "branch" in group:
        branch = group["branch"]
        if branch not in BRANCHES:
            raise ValueError(
                f"Invalid branch in param group {index}: {branch!r}; expected 'muon' or 'adamw'"
            )
        return branch
    if "use_muon" in group:
        return "muon" if group["use_muon"] else "adamw"
    return None


def _branch_groups(
    routes: list[tuple[str, torch.Tensor, str, str]],
    extra: dict[str, Any] | None = None,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """One param group per branch that received parameters, in :data:`BRANCHES` order."""
    groups = []
    for branch in BRANCHES:
        selected = [(n, p) for n, p, b, _ in routes if b == branch]
        if selected:
            groups.append(
                {
                    **(extra or {}),
                    "params": [p for _, p in selected],
                    "param_names": [n for n, _ in selected],
                    "branch": branch,
                    "name": branch if name is None else name,
                }
            )
    return groups


def _group_routes(
    groups: list[dict[str, Any]], vocab_size: int | None
) -> tuple[list[dict[str, Any]], RoutingTable]:
    out: list[dict[str, Any]] = []
    entries: list[RouteEntry] = []
    warned = False
    for index, group in enumerate(groups):
        if "params" not in group:
            raise ValueError(f"param group {index} has no 'params' entry")
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        if params and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in params):
            group = {**group, "param_names": [n for n, _ in params]}  # (name, tensor) pairs
            params = [t for _, t in params]
        names = list(
            group.get("param_names", [f"group{index}.param{i}" for i in range(len(params))])
        )
        if len(names) != len(params):
            raise ValueError(
                f"param group {index}: {len(names)} param_names for {len(params)} params"
            )
        extra = {
            k: v
            for k, v in group.items()
            if k not in ("params", "param_names", "branch", "use_muon", "name")
        }
        branch = _explicit_branch(group, index)
        if branch is None:
            if not warned:
                _warn_shape_only()
                warned = True
            routes = _shape_routes(params, vocab_size, f"group{index}.param")
            routes = [(names[i], p, b, r) for i, (_, p, b, r) in enumerate(routes)]
        else:
            routes = [(names[i], p, branch, "explicit group") for i, p in enumerate(params)]
        out += _branch_groups(routes, extra, group.get("name"))
        entries += [RouteEntry(n, tuple(p.shape), b, r) for n, p, b, r in routes]
    return out, RoutingTable(entries)


def route_parameters(
    params: Any, vocab_size: int | None = None
) -> tuple[list[dict[str, Any]], RoutingTable]:
    """Split ``params`` into ``muon`` / ``adamw`` param groups and record why.

    Args:
        params: an ``nn.Module``, ``named_parameters()``, an iterable of tensors, or group dicts.
        vocab_size: optional hint: a matrix with a leading dimension equal to it is an embedding or head.

    Returns:
        ``(groups, table)``: group dicts with keys ``params``, ``param_names``, ``branch`` and ``name``
        (plus any per-group hyperparameters the input groups carried), and the :class:`RoutingTable`.
    """
    if isinstance(params, torch.Tensor):
        raise TypeError(
            "params argument given to the optimizer should be an iterable of Tensors or dicts, "
            f"or an nn.Module, but got {torch.typename(params)}"
        )
    if isinstance(params, nn.Module):
        routes = _module_routes(params, vocab_size)
    else:
        items = list(params)
        if not items:
            raise ValueError("optimizer got an empty parameter list")
        if all(isinstance(x, dict) for x in items):
            return _group_routes(items, vocab_size)
        if all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in items):
            routes = _named_routes(items, vocab_size)
        elif all(isinstance(x, torch.Tensor) for x in items):
            if vocab_size is None:
                _warn_shape_only()
            routes = _shape_routes(items, vocab_size, "param")
        else:
            raise TypeError(
                "params must be an nn.Module, named_parameters() pairs, tensors, or param-group dicts; "
                f"got a mix of {sorted({type(x).__name__ for x in items})}"
            )
    groups = _branch_groups(routes)
    table = RoutingTable(RouteEntry(n, tuple(p.shape), b, r) for n, p, b, r in routes)
    return groups, table


def param_groups(model: nn.Module, vocab_size: int | None = None) -> list[dict[str, Any]]:
    """Routed param groups for ``model`` (see :func:`route_parameters`), ready to pass to any optimizer here.

    Example:
        >>> import torch.nn as nn
        >>> groups = param_groups(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)))
        >>> [g["branch"] for g in groups]
        ['muon', 'adamw']
    """
    return route_parameters(model, vocab_size)[0]
