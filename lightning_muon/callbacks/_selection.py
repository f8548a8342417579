"""Which parameters a diagnostic callback watches.

Default (no patterns): the optimizer's orthogonalized branch (param groups with
``"branch": "muon"``) when it has one; otherwise the optimized parameters that
:func:`lightning_muon.param_groups` would route to that branch (hidden matrices: no embeddings,
output head, norms or biases). Should routing fail, every optimized parameter with at least two
dimensions except ``nn.Embedding`` weights. With patterns (``fnmatch`` globs on
parameter names, e.g. ``"*.mlp.*"``): every matching optimized matrix. The result is capped at
``max_params`` parameters, spread evenly over the model's depth. Every choice that drops a
parameter produces a message. A pattern that matches no parameter name, or patterns that together
select no optimized matrix, raise ``ValueError`` naming the pattern and the available names (a
monitor that silently watches nothing is a misconfiguration, e.g. a YAML list broken by an
unquoted ``*``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.Linear(4, 10))
    >>> opt = torch.optim.AdamW(model.parameters())
    >>> sel = select_parameters(model, [opt], patterns=None, max_params=8)
    >>> [name for name, _ in sel.params]
    ['1.weight']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn
from torch.optim import Optimizer

__all__ = ["Selection", "clean_name", "select_parameters"]

_WRAPPER_PREFIXES = (
    "_orig_mod.",
    "_forward_module.",
    "_fsdp_wrapped_module.",
    "_checkpoint_wrapped_module.",
)


def clean_name(name: str) -> str:
    """Parameter name without ``torch.compile``/DDP/FSDP/checkpoint wrapper components."""
    parts = [p for p in name.split(".") if f"{p}." not in _WRAPPER_PREFIXES]
    return ".".join(parts)


@dataclass
class Selection:
    """Chosen parameters and the messages explaining what was left out.

    Attributes:
        params: ``(name, parameter)`` pairs in model order.
        warnings: problems the user should fix (nothing selected by default).
        infos: informational notes (skipped non-matrices, the cap).
    """

    params: list[tuple[str, Tensor]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)


def _named_parameters(module: nn.Module) -> list[tuple[str, Tensor]]:
    seen: set[int] = set()
    out = []
    for name, p in module.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append((clean_name(name), p))
    return out


def _routed_matrices(module: nn.Module, messages: list[str], owner: str) -> set[int]:
    """ids of the parameters the Muon-family routing sends to the orthogonal branch."""
    from lightning_muon.optim.routing import route_parameters

    try:
        groups, _ = route_parameters(module)
    except (TypeError, ValueError) as err:
        messages.append(
            f"{owner}: could not route the model's parameters ({err}); watching every matrix "
            "except nn.Embedding weights"
        )
        embeddings = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
        return {id(p) for p in module.parameters() if p.ndim >= 2 and id(p) not in embeddings}
    return {id(p) for g in groups if g["branch"] == "muon" for p in g["params"]}


def _preview(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    more = f", … ({len(names)} in all)" if len(names) > limit else ""
    return shown + more


def _spread(items: list, k: int) -> list:
    """``k`` items evenly spaced over ``items`` (first and last included)."""
    if k >= len(items):
        return items
    if k == 1:
        return [items[0]]
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def select_parameters(
    module: nn.Module,
    optimizers: Sequence[Optimizer],
    patterns: Sequence[str] | None,
    max_params: int | None,
    owner: str = "monitor",
) -> Selection:
    """Choose the parameters to watch (see the module docstring for the rules).

    Args:
        module: the model (``LightningModule``) whose ``named_parameters()`` name the tensors.
        optimizers: the optimizers that update them.
        patterns: ``fnmatch`` globs on parameter names, or ``None`` for the default choice.
        max_params: cap on the number of parameters (``None``: no cap).
        owner: name used in messages (the callback's class name).

    Returns:
        A :class:`Selection`.
    """
    sel = Selection()
    named = _named_parameters(module)
    optimized: set[int] = set()
    routed: set[int] = set()
    for opt in optimizers:
        for group in opt.param_groups:
            ids = {id(p) for p in group["params"]}
            optimized |= ids
            if group.get("branch") == "muon":
                routed |= ids

    if patterns is None:
        if routed:
            candidates = [(n, p) for n, p in named if id(p) in routed]
            how = "the optimizer's 'muon' branch"
        else:
            hidden = _routed_matrices(module, sel.infos, owner)
            candidates = [(n, p) for n, p in named if id(p) in optimized and id(p) in hidden]
            how = "optimized hidden matrices (no embeddings, output head, norms, biases)"
        skipped = [n for n, p in candidates if p.ndim < 2]
        candidates = [(n, p) for n, p in candidates if p.ndim >= 2]
        if skipped:
            sel.infos.append(f"{owner}: skipping non-matrix parameters: {_preview(skipped)}")
        if not candidates:
            sel.warnings.append(
                f"{owner}: found no parameter to monitor ({how}); the callback will do nothing. "
                f"Choose parameters with `params=[...]` (glob patterns on names such as "
                f"{_preview([n for n, _ in named], 5)})."
            )
    else:
        candidates = []
        chosen: set[int] = set()
        names = [n for n, _ in named]
        matrices = [n for n, p in named if p.ndim >= 2] or names
        for pat in patterns:
            hits = [(n, p) for n, p in named if fnmatch.fnmatchcase(n, pat)]
            if not hits:
                hint = ""
                if pat.startswith("[") and pat.endswith("]"):
                    hint = (
                        " It looks like a list that was read as one string: on the command line "
                        "quote the items, e.g. params='[\"*.mlp.fc_2.weight\"]' (YAML reads an "
                        "unquoted leading * as an alias)."
                    )
                raise ValueError(
                    f"{owner}: params pattern {pat!r} matches no parameter. Patterns are "
                    f"fnmatch globs on names from `named_parameters()`; available matrices: "
                    f"{_preview(matrices, 30)}.{hint}"
                )
            for n, p in hits:
                if id(p) in chosen:
                    continue
                chosen.add(id(p))
                if p.ndim < 2:
                    sel.infos.append(
                        f"{owner}: skipping {n!r} (shape {tuple(p.shape)}): not a matrix; "
                        "per-neuron norms and spectra need at least 2 dimensions"
                    )
                elif not p.requires_grad or id(p) not in optimized:
                    sel.infos.append(
                        f"{owner}: skipping {n!r}: it is frozen or not in any optimizer, "
                        "so its update is always zero"
                    )
                else:
                    candidates.append((n, p))
        order = {id(p): i for i, (_, p) in enumerate(named)}
        candidates.sort(key=lambda np_: order[id(np_[1])])
        if not candidates:
            skipped = " ".join(sel.infos)
            raise ValueError(
                f"{owner}: params {list(patterns)} select no optimized matrix ({skipped}); "
                f"available matrices: {_preview(matrices, 30)}"
            )

    if max_params is not None and len(candidates) > max_params:
        kept = _spread(candidates, max_params)
        sel.infos.append(
            f"{owner}: watching {max_params} of {len(candidates)} parameters (spread over depth): "
            f"{_preview([n for n, _ in kept])}. Raise `max_params` or pass `params=[...]` to change."
        )
        candidates = kept
    sel.params = candidates
    return sel
