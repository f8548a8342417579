"""Saving and loading a Muon-family optimizer: ``load_state_dict`` checks and old-state back-filling.

``state_dict()`` is torch's: param groups carry every hyperparameter, the engine knobs
(``ns_form``, ``max_bucket_numel``, ``compile_elementwise``) included, as torch records
``foreach``/``fused``. A state saved before a key existed loads with the key's default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from ..engine.buckets import DEFAULT_MAX_BUCKET_NUMEL

#: Group keys added after the first release, with the value a group saved without them gets.
BACKFILLED_GROUP_KEYS: dict[str, Any] = {
    "ns_form": "auto",
    "max_bucket_numel": DEFAULT_MAX_BUCKET_NUMEL,
    "compile_elementwise": False,
}


def _numel_expected(key: str, p: torch.Tensor) -> int:
    """Elements a state tensor should have: the parameter's, or one per row for row statistics."""
    if key.startswith("row_"):
        return p.shape[0]
    return p.numel()


class StateDictMixin(Optimizer):
    """``load_state_dict`` that refuses foreign state before changing anything, and ``__setstate__``."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state saved by the same optimizer class for the same parameters.

        Raises ``ValueError`` (before changing anything) when the state comes from another
        optimizer, or a state tensor's shape does not match its parameter. State tensors keep their
        saved dtype (fp32 moments stay fp32 for bf16 parameters).
        """
        name = type(self).__name__
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the state has {len(saved_groups)} param groups, this optimizer "
                f"has {len(self.param_groups)}"
            )
        pairs = []
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if saved.get("branch") != group["branch"] or "adamw_lr_ratio" not in saved:
                raise ValueError(
                    f"{name}.load_state_dict: param group {i} was not saved by a Muon-family optimizer "
                    f"with the same routing (saved branch {saved.get('branch')!r}, expected {group['branch']!r})"
                )
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: param group {i} has {len(saved['params'])} saved parameters, expected {len(group['params'])}"
                )
            pairs += list(zip(saved["params"], group["params"], strict=True))
        saved_state = state_dict["state"]
        for pid, p in pairs:
            for key, value in saved_state.get(pid, {}).items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.ndim
                    and value.numel() != _numel_expected(key, p)
                ):
                    raise ValueError(
                        f"{name}.load_state_dict: state {key!r} of {self._name_of(p)} has shape "
                        f"{tuple(value.shape)}, which does not fit the parameter's shape {tuple(p.shape)}"
                    )
        super().load_state_dict(state_dict)
        for pid, p in pairs:
            for key, value in saved_state.get(pid, {}).items():
                current = self.state[p].get(key)
                if (
                    isinstance(value, torch.Tensor)
                    and isinstance(current, torch.Tensor)
                    and current.dtype != value.dtype
                ):
                    self.state[p][key] = value.to(device=current.device).clone()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in BACKFILLED_GROUP_KEYS.items():
                group.setdefault(key, value)
        self.__dict__.setdefault("_capture", set())
        self.__dict__.setdefault("captured_directions", {})
        self.__dict__.setdefault("_hooks", {})
        self.__dict__.setdefault("skipped_steps", 0)
        self.__dict__.setdefault("nonfinite", "raise")
