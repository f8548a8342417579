"""Saving and loading a Muon-family optimizer: the checks of :mod:`.state_io` and old-state back-filling.

``state_dict()`` is torch's plus a ``state_record`` per group: param groups carry every
hyperparameter, the engine knobs (``ns_form``, ``max_bucket_numel``, ``compile_elementwise``)
included, as torch records ``foreach``/``fused``. A state saved before a key existed loads with
the key's default.
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer

from ..engine.buckets import DEFAULT_MAX_BUCKET_NUMEL
from . import state_io

#: Group keys added after the first release, with the value a group saved without them gets.
BACKFILLED_GROUP_KEYS: dict[str, Any] = {
    "ns_form": "auto",
    "max_bucket_numel": DEFAULT_MAX_BUCKET_NUMEL,
    "compile_elementwise": False,
    "structure": "flatten",
}


class StateDictMixin(Optimizer):
    """``state_dict`` with the algorithm record, a ``load_state_dict`` that checks everything before
    changing anything, and copies that keep the whole configuration (:mod:`.state_io`)."""

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict, each group recording the algorithm and its parameters' shapes."""
        return state_io.record(self, super().state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state saved by the same algorithm for the same parameters; everything is checked first.

        Raises ``ValueError`` before changing anything when the state comes from another optimizer
        class (both are named), a group value fails the constructor's checks or is missing, or a
        state entry is missing or has another shape than the one this optimizer creates. Group keys
        added after the first release are back-filled with their defaults
        (:data:`BACKFILLED_GROUP_KEYS`). Parameter names stay this optimizer's; a numeric ``step``
        becomes a tensor; state tensors keep their saved dtype. See :mod:`.state_io`.
        """
        state_io.load_state_dict(self, state_dict, BACKFILLED_GROUP_KEYS)

    def __getstate__(self) -> dict[str, Any]:
        return state_io.getstate(self)

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
        self.__dict__.setdefault("vocab_size", None)
        state_io.steps_as_tensors(self)
