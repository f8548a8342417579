"""Optimizer state dicts that FSDP1's ``optim_state_dict`` accepts for two-branch optimizers.

``FSDP.optim_state_dict`` (full and sharded, ``use_orig_params=True``) rebuilds each ``FlatParameter``'s
state name by name: for every positive-dimension state name it concatenates that state of *every*
parameter of the flat parameter and treats a parameter without it as holding no element on this
rank. A Muon-family optimizer keeps different names on its two branches (``momentum_buffer``… on
matrices, ``exp_avg``/``exp_avg_sq`` on the AdamW branch), and FSDP1 puts both kinds into one flat
parameter (a block's matrices with its norm gains), so the stock call fails.

:func:`uniform_state` pads the state dict an optimizer hands out: every parameter gets every state
name used in its flat parameter's group of parameters, the missing ones as zeros shaped like its
slice (only in the returned dict; the live state is unchanged). :func:`without_padding` removes them
again after loading, so each branch keeps exactly its own state.
"""

from __future__ import annotations

from typing import Any

import torch

#: State names of the AdamW branch (``adamw_branch._init_state``).
ADAMW_KEYS = frozenset({"step", "exp_avg", "exp_avg_sq"})


def _own_keys(optimizer: Any, group: dict[str, Any], p: torch.Tensor) -> set[str]:
    if group["branch"] == "adamw":
        return set(ADAMW_KEYS)
    probe = torch.zeros(1, 1, dtype=p.dtype, device=p.device)
    return {"step", *optimizer.matrix_step(group).init_state(probe)}


def uniform_state(optimizer: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` with every parameter holding every positive-dimension state name (zeros where absent)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = state_dict["state"]
    names: set[str] = set()
    for entry in state.values():
        names |= {k for k, v in entry.items() if isinstance(v, torch.Tensor) and v.ndim}
    padded = {}
    for index in range(len(params)):
        entry = state.get(index)
        if entry is None:
            continue
        template = next(v for v in entry.values() if isinstance(v, torch.Tensor) and v.ndim)
        padded[index] = {
            **{
                k: torch.zeros_like(template, dtype=template.dtype) for k in names if k not in entry
            },
            **entry,
        }
    return {**state_dict, "state": {**state, **padded}}


def without_padding(optimizer: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` with the state names :func:`uniform_state` added removed again (a shallow
    copy; before ``load_state_dict`` checks each parameter's state names)."""
    own: dict[Any, set[str]] = {}
    for saved, group in zip(state_dict["param_groups"], optimizer.param_groups, strict=False):
        for pid, p in zip(saved["params"], group["params"], strict=False):
            own[pid] = _own_keys(optimizer, group, p)
    state = {
        pid: {k: v for k, v in entry.items() if pid not in own or k in own[pid]}
        for pid, entry in state_dict["state"].items()
    }
    return {**state_dict, "state": state}
