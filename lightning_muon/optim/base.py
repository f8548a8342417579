"""The shared optimizer shell: routing, validation, bucketing, the AdamW branch, closures and state.

Every Muon-family optimizer here is one :class:`torch.optim.Optimizer` with two kinds of param
groups: ``branch="muon"`` (hidden matrices, updated by the subclass's algorithm) and
``branch="adamw"`` (everything else). A subclass writes the algorithm as three short
compositions of the pure transforms in :mod:`lightning_muon.core`:

* :meth:`MuonFamilyOptimizer._direction`: elementwise statistics → the matrix to orthogonalize;
* :meth:`MuonFamilyOptimizer._orthogonalize`: Newton–Schulz / exact polar / ``Ψ_p``;
* :meth:`MuonFamilyOptimizer._finalize`: row or elementwise normalisation and magnitude.

The shell stacks same-shape matrices (``(N, m, n)``, one batched orthogonalization per bucket),
keeps optimizer state in fp32 whatever the parameter dtype, and applies decoupled weight decay
``W ← W(1 − ηλ)`` with the base learning rate before ``W ← W − η·U``.

Non-finite gradients are detected before any state or weight is touched: with
``nonfinite="raise"`` (default) the step raises ``FloatingPointError`` naming the parameter; with
``nonfinite="skip"`` the whole step is skipped and counted in ``skipped_steps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.optim import Optimizer

from ..core.normalize import MatrixSum, local_matrix_sum
from ..core.orthogonalize import (
    ORTHOGONALIZER_NAMES,
    custom_table,
    default_ns_dtype,
    make_orthogonalizer,
)
from ..core.scaling import SCALE_RULES
from .adamw_branch import adamw_group_step
from .routing import route_parameters
from .tensors import local as _local
from .validation import (
    check_betas,
    check_bool,
    check_choice,
    check_int,
    check_positive,
    check_range,
)

NONFINITE_MODES = ("raise", "skip")
NS_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}

#: Keys every group carries (with their shell-level meaning); subclasses add their own.
COMMON_DEFAULTS: dict[str, Any] = {
    "adamw_lr_ratio": 1.0,
    "adamw_betas": (0.9, 0.95),
    "adamw_eps": 1e-8,
    "adamw_weight_decay": 0.0,
}


def state_dtype(p: torch.Tensor) -> torch.dtype:
    """Optimizer-state dtype of a parameter: fp32, or fp64 for fp64 parameters (never bf16/fp16)."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def state_zeros(p: torch.Tensor) -> torch.Tensor:
    """A zero state tensor shaped like ``p`` in :func:`state_dtype` (a DTensor for a DTensor ``p``)."""
    return torch.zeros_like(p, dtype=state_dtype(p), memory_format=torch.contiguous_format)


def matrix_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """The matrix an update acts on: ``(out, in·k·…)`` (conv weights are flattened)."""
    if len(shape) < 2:
        raise ValueError(
            f"a matrix parameter needs at least 2 dimensions, got shape {tuple(shape)}"
        )
    return shape[0], math.prod(shape[1:])


class MuonFamilyOptimizer(Optimizer):
    """Base class of :class:`~lightning_muon.Muon` and its relatives (not used directly).

    Subclasses set ``algorithm`` and implement :meth:`_init_matrix_state`, :meth:`_direction`
    and :meth:`_finalize` (and may override :meth:`_orthogonalize`, :meth:`_validate_algorithm`).
    """

    algorithm = "muon-family"
    #: Largest number of elements stacked into one batched call (bounds the step's temporary memory).
    max_bucket_numel = 1 << 24

    def __init__(
        self,
        params: Any,
        defaults: dict[str, Any],
        vocab_size: int | None = None,
        nonfinite: str = "raise",
    ) -> None:
        check_choice("nonfinite", nonfinite, NONFINITE_MODES)
        if vocab_size is not None:
            check_int("vocab_size", vocab_size, 1, 1 << 40)
        groups, self.routing = route_parameters(params, vocab_size)
        if not any(g["branch"] == "muon" for g in groups):
            raise ValueError(
                f"{type(self).__name__} got no matrix parameters for its orthogonal branch (all {len(self.routing)} "
                "parameters were routed to AdamW); use torch.optim.AdamW for this model, or mark groups with "
                "branch='muon'. Routing:\n" + str(self.routing)
            )
        defaults = {**COMMON_DEFAULTS, **defaults}
        self._validate_group(defaults, "")
        super().__init__(groups, defaults)
        for i, group in enumerate(self.param_groups):
            self._validate_group(group, f" (param group {i})")
            for p in group["params"]:
                if group["branch"] == "muon" and p.ndim < 2:
                    raise ValueError(
                        f"{type(self).__name__}: parameter {self._name_of(p)} of shape {tuple(p.shape)} is in a "
                        "branch='muon' group but is not a matrix; put 1-D parameters in a branch='adamw' group"
                    )
                if p.is_complex():
                    raise ValueError(
                        f"{type(self).__name__} does not support complex parameters: {self._name_of(p)}"
                    )
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self._capture: set[int] = set()
        self.captured_directions: dict[torch.Tensor, torch.Tensor] = {}
        self._orthogonalizer_cache: dict[tuple, Callable[[torch.Tensor], torch.Tensor]] = {}

    # ------------------------------------------------------------------ validation
    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        try:
            check_range("lr", group["lr"], 0.0)
            check_range("weight_decay", group["weight_decay"], 0.0)
            check_range("adamw_lr_ratio", group["adamw_lr_ratio"], 0.0)
            check_betas("adamw_betas", group["adamw_betas"])
            check_positive("adamw_eps", group["adamw_eps"])
            check_range("adamw_weight_decay", group["adamw_weight_decay"], 0.0)
            self._validate_algorithm(group)
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}: {err}{where}") from None

    def _validate_algorithm(self, group: dict[str, Any]) -> None:
        """Subclass checks of algorithm hyperparameters (raise ``ValueError``)."""

    @staticmethod
    def _validate_orthogonalizer(group: dict[str, Any]) -> None:
        """Shared checks of ``orthogonalizer``, ``ns_steps``, ``ns_eps``, ``ns_dtype`` and ``scale``."""
        spec = group["orthogonalizer"]
        if isinstance(spec, str):
            check_choice("orthogonalizer", spec, ORTHOGONALIZER_NAMES)
        else:
            custom_table(spec)
        check_int("ns_steps", group["ns_steps"], 1, 99)
        check_positive("ns_eps", group["ns_eps"])
        if group["ns_dtype"] is not None:
            check_choice("ns_dtype", group["ns_dtype"], tuple(NS_DTYPES))
        check_choice("scale", group["scale"], SCALE_RULES)
        check_positive("rms_target", group["rms_target"])

    @staticmethod
    def _validate_momentum(group: dict[str, Any]) -> None:
        check_range("momentum", group["momentum"], 0.0, 1.0)
        check_bool("nesterov", group["nesterov"])

    # ------------------------------------------------------------------ subclass interface
    def _init_matrix_state(
        self, p: torch.Tensor, shape: tuple[int, int], group: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Fresh fp32 state tensors for a matrix parameter (``shape`` is its matrix view)."""
        raise NotImplementedError

    def _direction(
        self, G: torch.Tensor, S: dict[str, torch.Tensor], group: dict[str, Any]
    ) -> torch.Tensor:
        """Update the stacked state ``S`` in place from gradients ``G (N, m, n)``; return the input of the orthogonalizer."""
        raise NotImplementedError

    def _finalize(
        self,
        O: torch.Tensor,
        S: dict[str, torch.Tensor],
        group: dict[str, Any],
        shape: tuple[int, int],
        matrix_sum: MatrixSum,
    ) -> torch.Tensor:
        """Turn the orthogonalized ``O`` into the update ``U`` (applied as ``W ← W − lr·U``)."""
        raise NotImplementedError

    def _orthogonalize(self, X: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """Orthogonalize the stacked matrices ``X`` with the group's orthogonalizer."""
        return self._orthogonalizer_for(group, X.device)(X)

    def _orthogonalizer_for(
        self, group: dict[str, Any], device: torch.device
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        spec = group["orthogonalizer"]
        dtype = NS_DTYPES[group["ns_dtype"]] if group["ns_dtype"] else default_ns_dtype(device)
        key = (
            spec if isinstance(spec, str) else tuple(map(tuple, spec)),
            group["ns_steps"],
            group["ns_eps"],
            dtype,
        )
        if key not in self._orthogonalizer_cache:
            self._orthogonalizer_cache[key] = make_orthogonalizer(
                spec, group["ns_steps"], group["ns_eps"], dtype
            )
        return self._orthogonalizer_cache[key]

    # ------------------------------------------------------------------ diagnostics hook
    def capture_directions(self, params: Any) -> None:
        """Record the orthogonalized direction of ``params`` at the next steps (``[]`` stops).

        After each :meth:`step`, ``captured_directions[p]`` holds ``O`` (fp32, matrix view) for
        every requested ``p`` that was updated.
        """
        self._capture = {id(p) for p in params}
        self.captured_directions = {}

    # ------------------------------------------------------------------ step
    def _name_of(self, p: torch.Tensor) -> str:
        for group in self.param_groups:
            for name, q in zip(group.get("param_names", ()), group["params"], strict=False):
                if q is p:
                    return name
        return f"<unnamed parameter of shape {tuple(p.shape)}>"

    def _check_gradients(self) -> bool:
        """Reject sparse/complex grads; return False (skip) or raise on non-finite ones. Touches nothing."""
        grads, params = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients: {self._name_of(p)}"
                    )
                if p.grad.is_complex():
                    raise RuntimeError(
                        f"{type(self).__name__} does not support complex gradients: {self._name_of(p)}"
                    )
                if _local(p.grad).numel():
                    params.append(p)
                    grads.append(_local(p.grad))
        if not grads:
            return True
        finite = torch.isfinite(torch.stack(torch._foreach_norm(grads, math.inf)))
        if bool(finite.all()):
            return True
        bad = [self._name_of(p) for p, ok in zip(params, finite.tolist(), strict=True) if not ok]
        if self.nonfinite == "skip":
            self.skipped_steps += 1
            return False
        raise FloatingPointError(
            f"{type(self).__name__}: non-finite gradient in {', '.join(bad)}; no weight or optimizer state was "
            "changed. Construct with nonfinite='skip' to skip such steps instead."
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; returns the closure's loss (``None`` without a closure)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._check_gradients():
            return loss
        self.captured_directions = {}
        for group in self.param_groups:
            if group["branch"] == "adamw":
                adamw_group_step(group, self.state)
            else:
                self._matrix_group_step(group)
        return loss

    def _buckets(
        self, group: dict[str, Any]
    ) -> Iterator[tuple[tuple[int, int], list[torch.Tensor]]]:
        """Same-shape, same-dtype, same-device matrices with gradients, chunked to ``max_bucket_numel``."""
        buckets: dict[tuple, list[torch.Tensor]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            shape = matrix_shape(_local(p).shape)
            buckets.setdefault((shape, p.dtype, p.device), []).append(p)
        for (shape, _, _), plist in buckets.items():
            per = max(1, self.max_bucket_numel // max(1, shape[0] * shape[1]))
            for start in range(0, len(plist), per):
                yield shape, plist[start : start + per]

    def _state_of(
        self, p: torch.Tensor, shape: tuple[int, int], group: dict[str, Any]
    ) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state.update(self._init_matrix_state(p, shape, group))
        return state

    def _matrix_group_step(self, group: dict[str, Any]) -> None:
        for shape, plist in self._buckets(group):
            if shape[0] * shape[1] == 0:
                continue
            states = [self._state_of(p, shape, group) for p in plist]
            U = self._bucket_update(plist, states, group, shape, local_matrix_sum)
            self._apply(plist, U, group)

    def _bucket_update(
        self,
        plist: list[torch.Tensor],
        states: list[dict[str, Any]],
        group: dict[str, Any],
        shape: tuple[int, int],
        matrix_sum: MatrixSum,
        orthogonalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The stacked update ``U (N, m, n)`` of one bucket; writes the new state back."""
        m, n = shape
        local_rows = _local(plist[0]).shape[0]
        G = torch.stack([_local(p.grad).reshape(local_rows, -1) for p in plist]).to(
            state_dtype(plist[0])
        )
        keys = [k for k, v in states[0].items() if isinstance(v, torch.Tensor)]
        S = {k: torch.stack([_as_rows(_local(s[k]), local_rows) for s in states]) for k in keys}
        S["step"] += 1
        S["step"] = S["step"].view(-1, 1, 1)
        X = self._direction(G, S, group)
        O = (orthogonalize or (lambda x: self._orthogonalize(x, group)))(X)
        if self._capture:
            for i, p in enumerate(plist):
                if id(p) in self._capture:
                    self.captured_directions[p] = O[i].detach().float().clone()
        U = self._finalize(O, S, group, (m, n), matrix_sum)
        for k in keys:
            torch._foreach_copy_(
                [_local(s[k]) for s in states],
                [v.view_as(_local(s[k])) for v, s in zip(S[k].unbind(0), states, strict=True)],
            )
        return U

    def _apply(self, plist: list[torch.Tensor], U: torch.Tensor, group: dict[str, Any]) -> None:
        """Decoupled weight decay with the base lr, then ``W ← W − lr·U``."""
        lr, wd = group["lr"], group["weight_decay"]
        local = [_local(p) for p in plist]
        if wd:
            torch._foreach_mul_(local, 1.0 - lr * wd)
        torch._foreach_add_(
            local,
            [u.view_as(w).to(w.dtype) for u, w in zip(U.unbind(0), local, strict=True)],
            alpha=-lr,
        )

    # ------------------------------------------------------------------ state dict
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state saved by the same optimizer class for the same parameters.

        Raises ``ValueError`` (before changing anything) when the state comes from another
        optimizer, or a state tensor's shape does not match its parameter. State tensors keep their
        saved dtype (fp32 moments stay fp32 for bf16 parameters).
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the state has {len(saved_groups)} param groups, this optimizer "
                f"has {len(self.param_groups)}"
            )
        pairs = []
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if saved.get("branch") != group["branch"] or "adamw_lr_ratio" not in saved:
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: param group {i} was not saved by a Muon-family optimizer "
                    f"with the same routing (saved branch {saved.get('branch')!r}, expected {group['branch']!r})"
                )
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: param group {i} has {len(saved['params'])} saved parameters, expected {len(group['params'])}"
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
                        f"{type(self).__name__}.load_state_dict: state {key!r} of {self._name_of(p)} has shape "
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
        self.__dict__.setdefault("_capture", set())
        self.__dict__.setdefault("captured_directions", {})
        self.__dict__.setdefault("_orthogonalizer_cache", {})
        self.__dict__.setdefault("skipped_steps", 0)
        self.__dict__.setdefault("nonfinite", "raise")


def _numel_expected(key: str, p: torch.Tensor) -> int:
    """Elements a state tensor should have: the parameter's, or one per row for row statistics."""
    if key.startswith("row_"):
        return p.shape[0]
    return p.numel()


def _as_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """View a state tensor as ``(rows, -1)`` (scalars stay scalars)."""
    return t.reshape(rows, -1) if t.ndim else t
