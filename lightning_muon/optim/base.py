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
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch.optim import Optimizer

from ..core.normalize import MatrixSum, local_matrix_sum
from ..core.orthogonalize import (
    NS_FORMS,
    ORTHOGONALIZER_NAMES,
    custom_table,
    default_ns_dtype,
    make_orthogonalizer,
)
from ..core.scaling import SCALE_RULES
from . import state_io
from .adamw_branch import adamw_group_step
from .param_groups import add_param_group, check_group
from .routing import _reject_fsdp1, route_parameters
from .tensors import is_dtensor as _is_dtensor
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
_UNRESOLVED = object()
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

    Every way of changing an optimizer keeps the constructor's checks: :meth:`add_param_group`
    routes and validates, :meth:`load_state_dict` refuses another algorithm's state, wrong shapes
    and invalid group values before changing anything, ``copy.deepcopy`` and ``pickle`` keep the
    whole configuration. Unlike ``torch.optim``, a first :meth:`step` with no gradient anywhere raises.
    """

    algorithm = "muon-family"
    #: Largest number of elements stacked into one batched call. One bucket is in flight at a time,
    #: so a step's temporary memory stays below ~7 fp32 copies of ``max(max_bucket_numel, largest
    #: matrix)`` elements (measured for all but SpectralMuon's ``p > 0`` roots, which need ~13).
    max_bucket_numel = 1 << 24
    #: ``torch.compile`` the elementwise hooks (:meth:`_direction`, :meth:`_finalize`): ``False``,
    #: ``True`` (inductor) or a backend name. Off by default: eager was faster on the CPUs measured
    #: and GPUs are not measured yet. A hook that fails to compile runs eagerly (with a warning).
    compile_elementwise: bool | str = False
    #: Newton–Schulz form (:func:`~lightning_muon.core.orthogonalize.ns_form`): ``"auto"`` (direct;
    #: Gram for wide fp64), ``"fast"`` (Gram for wide fp32 too: 37-44% fewer FLOPs on transformer
    #: MLP/QKV matrices, rounding error ~500·eps instead of ~10·eps), ``"direct"`` or ``"gram"``.
    ns_form: str = "auto"

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
        # FSDP1 marks its flat parameters and (use_orig_params=True) the 1-D views into them; plain
        # tensors (litgpt, LightningCLI pass model.parameters()) carry no module names to route by.
        if any(getattr(p, "_fsdp_flattened", False) for g in groups for p in g["params"]):
            _reject_fsdp1(["_flat_param"])
        if not any(g["branch"] == "muon" for g in groups):
            raise ValueError(
                f"{type(self).__name__} got no matrix parameters for its orthogonal branch (all {len(self.routing)} "
                "parameters were routed to AdamW); use torch.optim.AdamW for this model, or mark groups with "
                "branch='muon'. Routing:\n" + str(self.routing)
            )
        defaults = {**COMMON_DEFAULTS, **defaults}
        self._validate_group(defaults, "")
        self.vocab_size = vocab_size
        self._constructing = True  # torch's __init__ adds the groups routed above
        super().__init__(groups, defaults)
        del self._constructing
        for i, group in enumerate(self.param_groups):
            check_group(self, group, f" (param group {i})")
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
        """Update the stacked state ``S`` in place from gradients ``G (N, m, n)``; return the input of the orthogonalizer.

        ``G`` is read-only: for a one-matrix bucket it is a view of the gradient itself (and ``S``
        views of the state), so nothing is copied. The returned tensor may alias ``S`` or ``G``;
        orthogonalizers never modify their input.
        """
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
        check_choice("ns_form", self.ns_form, NS_FORMS)
        key = (
            spec if isinstance(spec, str) else tuple(map(tuple, spec)),
            group["ns_steps"],
            group["ns_eps"],
            dtype,
            self.ns_form,
        )
        if key not in self._orthogonalizer_cache:
            self._orthogonalizer_cache[key] = make_orthogonalizer(
                spec, group["ns_steps"], group["ns_eps"], dtype, self.ns_form
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
                params.append(p)
                grads.append(_local(p.grad))
        finite = _finite_flags(grads) if grads else None
        engine = self._engine()
        if engine is not None:  # every rank must take the same decision
            finite = engine.reduce_finite(params, finite)
        if finite is None or bool(finite.all()):
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
        """Perform one optimization step; returns the closure's loss (``None`` without a closure).

        Differs from ``torch.optim`` in one case: the **first** step raises ``RuntimeError`` when no
        parameter has a gradient (torch does nothing). Such an optimizer almost always holds tensors
        the model no longer trains (built before FSDP2 replaced them); later steps without any
        gradient are no-ops, as in torch.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self.state and not any(
            p.grad is not None for g in self.param_groups for p in g["params"]
        ):
            raise RuntimeError(
                f"{type(self).__name__}: the first step found no gradient on any of its parameters, so it "
                "holds tensors the model no longer trains (e.g. built from model.parameters() before FSDP2's "
                "fully_shard replaced them, as the stock LightningCLI --optimizer does). Build it at fit time from "
                "the live parameters: lightning_muon.cli.MuonLightningCLI, lightning_muon.MuonMixin, or "
                "lightning_muon.build_optimizer(self, ...) inside configure_optimizers."
            )
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

    def _engine(self) -> Any:
        """The distributed engine (:mod:`lightning_muon.distributed`), or ``None`` in one process.

        Resolved at the first step (the process group may be set up after construction) and
        cached; :func:`lightning_muon.distributed.configure` replaces it.
        """
        engine = self.__dict__.get("_distributed_engine", _UNRESOLVED)
        if engine is _UNRESOLVED:
            engine = None
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                from ..distributed.engine import engine_for

                engine = engine_for(self)
            self._distributed_engine = engine
        return engine

    def _matrix_group_step(self, group: dict[str, Any]) -> None:
        engine = self._engine()
        if engine is not None:
            engine.group_step(group)
            return
        for shape, plist in self._buckets(group):
            if shape[0] * shape[1] == 0:
                continue
            fresh = not any(self.state[p] for p in plist)
            states = [self._state_of(p, shape, group) for p in plist]
            if fresh:
                _pack(states)
            U = self._bucket_update(plist, states, group, shape, local_matrix_sum)
            self._apply(plist, U, group)
            del U  # not alive while the next bucket is computed: peak memory is one bucket's

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
        work = self._bucket_begin(plist, states, group)
        O = (orthogonalize or (lambda x: self._orthogonalize(x, group)))(work.X)
        return self._bucket_finish(work, O, group, shape, matrix_sum)

    def _bucket_begin(
        self, plist: list[torch.Tensor], states: list[dict[str, Any]], group: dict[str, Any]
    ) -> BucketWork:
        """First half of :meth:`_bucket_update`: stack gradients and state, return the orthogonalizer input.

        Works on the local rows only (a shard of a sharded parameter, possibly zero rows); the
        distributed layer orthogonalizes ``work.X`` elsewhere and hands ``O`` to :meth:`_bucket_finish`.
        """
        local_rows = _local(plist[0]).shape[0]
        G = _stack([_as_rows(_local(p.grad), local_rows) for p in plist]).to(state_dtype(plist[0]))
        keys = [k for k, v in states[0].items() if isinstance(v, torch.Tensor)]
        S = {k: _stack([_as_rows(_local(s[k]), local_rows) for s in states]) for k in keys}
        S["step"] += 1
        S["step"] = S["step"].view(-1, 1, 1)
        return BucketWork(plist, states, keys, S, self._hook("_direction")(G, S, group))

    def _bucket_finish(
        self,
        work: BucketWork,
        O: torch.Tensor,
        group: dict[str, Any],
        shape: tuple[int, int],
        matrix_sum: MatrixSum,
    ) -> torch.Tensor:
        """Second half of :meth:`_bucket_update`: capture, finalize ``O`` into ``U``, write the state back."""
        if self._capture:
            for i, p in enumerate(work.plist):
                if id(p) in self._capture:
                    self.captured_directions[p] = O[i].detach().float().clone()
        U = self._hook("_finalize")(O, work.S, group, shape, matrix_sum)
        for k in work.keys:
            targets = [_local(s[k]) for s in work.states]
            if work.S[k].data_ptr() == targets[0].data_ptr():
                continue  # the stack was a view: the state was updated in place
            torch._foreach_copy_(
                targets, [v.view_as(t) for v, t in zip(work.S[k].unbind(0), targets, strict=True)]
            )
        return U

    def _hook(self, name: str) -> Callable[..., torch.Tensor]:
        """The hook ``name``, compiled when :attr:`compile_elementwise` asks for it."""
        eager = getattr(self, name)
        backend = self.compile_elementwise
        if not backend:
            return eager
        cache = self.__dict__.setdefault("_compiled_hooks", {})
        key = (name, backend)
        if key not in cache:
            chosen = "inductor" if backend is True else backend
            cache[key] = torch.compile(eager, backend=chosen, fullgraph=True)
        compiled = cache[key]
        if compiled is None:
            return eager

        def call(*args: Any) -> torch.Tensor:
            try:  # fullgraph: a compile error is raised before any tensor is touched
                return compiled(*args)
            except torch._dynamo.exc.TorchDynamoException as err:
                warnings.warn(
                    f"{type(self).__name__}: torch.compile of {name} failed, running it eagerly: {err}",
                    stacklevel=4,
                )
                cache[key] = None
                return eager(*args)

        return call

    def _apply(self, plist: list[torch.Tensor], U: torch.Tensor, group: dict[str, Any]) -> None:
        """Decoupled weight decay with the base lr, then ``W ← W − lr·U``.

        ``lr == 0`` leaves the weights untouched (torch's distributed checkpoint creates optimizer
        state by stepping with zero gradients and ``lr = 0``).
        """
        lr, wd = float(group["lr"]), group["weight_decay"]  # a one-element tensor lr is accepted
        if lr == 0:
            return
        local = [_local(p) for p in plist]
        if wd:
            torch._foreach_mul_(local, 1.0 - lr * wd)
        torch._foreach_add_(
            local,
            [u.view_as(w).to(w.dtype) for u, w in zip(U.unbind(0), local, strict=True)],
            alpha=-lr,
        )

    # ------------------------------------------------------------------ groups, state dict, copies
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, routed and checked exactly as the constructor does (:mod:`.param_groups`).

        Plain torch groups (``{"params": [p, ...], "lr": ...}``, ``(name, tensor)`` pairs) work,
        and may become two groups (``muon`` and ``adamw``); a rejected group changes nothing.
        """
        if self.__dict__.get("_constructing"):
            super().add_param_group(param_group)  # routed and checked by __init__
        else:
            add_param_group(self, param_group)

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict, each group recording the algorithm and its parameters' shapes."""
        return state_io.record(self, super().state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state saved by the same algorithm for the same parameters; everything is checked first.

        Raises ``ValueError`` before changing anything when the state comes from another optimizer
        class (both are named), a group value fails the constructor's checks or is missing, or a
        state entry is missing or has another shape than the one this optimizer creates. Parameter
        names stay this optimizer's; a numeric ``step`` becomes a tensor; state tensors are copied
        and keep their saved dtype. See :mod:`lightning_muon.optim.state_io`.
        """
        state_io.load_state_dict(self, state_dict)

    def __getstate__(self) -> dict[str, Any]:
        return state_io.getstate(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_capture", set())
        self.__dict__.setdefault("captured_directions", {})
        self.__dict__.setdefault("_orthogonalizer_cache", {})
        self.__dict__.setdefault("skipped_steps", 0)
        self.__dict__.setdefault("nonfinite", "raise")
        self.__dict__.setdefault("vocab_size", None)
        state_io.steps_as_tensors(self)


def _finite_flags(grads: list[torch.Tensor]) -> torch.Tensor:
    """``isfinite`` of each gradient as a bool vector (an empty shard is finite).

    Screens with the 2-norm (one fused read of every gradient; the inf-norm is ~20x slower on CPU):
    NaN/±inf make it non-finite, and so can overflow of huge finite values, hence the exact
    per-tensor recheck of the flagged ones only.
    """
    flags = torch.ones(len(grads), dtype=torch.bool, device=grads[0].device)
    full = [i for i, g in enumerate(grads) if g.numel()]
    if full:
        screened = torch.isfinite(torch.stack(torch._foreach_norm([grads[i] for i in full], 2)))
        for j in (~screened).nonzero().flatten().tolist():
            screened[j] = bool(torch.isfinite(grads[full[j]]).all())
        flags[full] = screened.to(flags.device)
    return flags


def _pack(states: list[dict[str, Any]]) -> None:
    """Give a bucket's fresh state one storage per key: ``state[k]`` become consecutive views.

    :func:`_stack` then sees the stacked state without copying it, and the updated state needs no
    copy back. Keys whose tensors differ in shape, dtype or device, and DTensors, stay separate.
    A state replaced later (``load_state_dict``) simply takes the copying path.
    """
    if len(states) < 2:
        return
    for key, first in states[0].items():
        values = [s.get(key) for s in states]
        if not isinstance(first, torch.Tensor) or _is_dtensor(first):
            continue
        if not all(
            isinstance(v, torch.Tensor)
            and not _is_dtensor(v)
            and (v.shape, v.dtype, v.device) == (first.shape, first.dtype, first.device)
            for v in values
        ):
            continue
        for s, view in zip(states, torch.stack(values).unbind(0), strict=True):
            s[key] = view


def _stacked_view(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """The ``(N, ...)`` tensor whose slices are ``tensors``, if they tile one storage in order
    (packed state, also after ``torch.save``/``torch.load``, which keeps storages shared)."""
    first = tensors[0]
    if not first.is_contiguous():
        return None
    size = first.numel() * first.element_size()
    ptr, storage = first.data_ptr(), first.untyped_storage().data_ptr()
    for i, t in enumerate(tensors[1:], 1):
        if t.data_ptr() != ptr + i * size or t.shape != first.shape or t.dtype != first.dtype:
            return None
        if t.stride() != first.stride() or t.untyped_storage().data_ptr() != storage:
            return None
    return first.as_strided((len(tensors), *first.shape), (first.numel(), *first.stride()))


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack along a new first dim without copying when possible: a single tensor, or tensors
    that are consecutive views of one storage (packed state), become a view, so in-place updates
    of the stack reach them directly; otherwise ``torch.stack`` copies."""
    if len(tensors) == 1:
        return tensors[0].unsqueeze(0)
    view = _stacked_view(tensors)
    return view if view is not None else torch.stack(tensors)


def _as_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """View a tensor as ``(rows, -1)`` (scalars stay scalars; an empty shard keeps its column count)."""
    if not t.ndim:
        return t
    return t.reshape(rows, -1) if rows else t.reshape(0, math.prod(t.shape[1:]))


class BucketWork(NamedTuple):
    """A bucket between :meth:`MuonFamilyOptimizer._bucket_begin` and ``_bucket_finish``."""

    plist: list[torch.Tensor]
    states: list[dict[str, Any]]
    keys: list[str]
    S: dict[str, torch.Tensor]
    X: torch.Tensor
