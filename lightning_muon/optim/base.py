"""The shared optimizer shell: routing, validation, the AdamW branch, closures and the executor.

Every Muon-family optimizer here is one :class:`torch.optim.Optimizer` with two kinds of param
groups: ``branch="muon"`` (hidden matrices, updated by the subclass's algorithm) and
``branch="adamw"`` (everything else). A subclass is its algorithm: a
:class:`~lightning_muon.engine.step.MatrixStep` (``begin``: the matrix to orthogonalize;
``finish``: normalisation and magnitude, both compositions of :mod:`lightning_muon.core`), its
own hyperparameters and their defaults. The shell validates every group, screens gradients, and
hands each matrix group to an executor (:mod:`lightning_muon.engine`,
:mod:`lightning_muon.distributed`), which stacks same-shape matrices, keeps state in fp32 whatever
the parameter dtype, and applies ``W ← W(1 − ηλ) − η·U`` with decoupled weight decay.

Non-finite gradients are detected before any state or weight is touched: with
``nonfinite="raise"`` (default) the step raises ``FloatingPointError`` naming the parameter; with
``nonfinite="skip"`` the whole step is skipped and counted in ``skipped_steps``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..core.orthogonalizers import DTYPES, Orthogonalizer, make_orthogonalizer
from ..distributed.engine import DistributedOptions, executor_for
from ..distributed.flat_engine import flat_executor_for
from ..engine.buckets import DEFAULT_MAX_BUCKET_NUMEL
from ..engine.compiled import ElementwiseHooks
from ..engine.local import LocalExecutor, MatrixGroup
from ..engine.step import Capture, MatrixStep
from ..engine.tensors import is_dtensor
from .adamw_branch import adamw_group_step
from .checkpoint import StateDictMixin
from .flat_routing import print_routing, route_flat, uses_flat_parameters
from .flat_state import uniform_state, without_padding
from .hyperparameters import Check, check_group, document, merge_signature
from .param_groups import add_param_group, check_param_group
from .routing import route_parameters
from .screening import screen_gradients
from .structure import StructureSpec, group_blockings, warn_unmatched_patterns

NONFINITE_MODES = ("raise", "skip")
_LOCAL = LocalExecutor()


class MuonFamilyOptimizer(StateDictMixin):
    """Base class of :class:`~lightning_muon.Muon` and its relatives (not used directly).

    A subclass sets :attr:`step_class` (its :class:`~lightning_muon.engine.step.MatrixStep`), its
    :attr:`algorithm` name and an ``__init__`` listing its own hyperparameters with their
    defaults, passing the rest on: ``super().__init__(params, own_arguments(locals()), **kwargs)``.

    Every way of changing an optimizer keeps the constructor's checks: :meth:`add_param_group`
    routes and validates, ``load_state_dict`` refuses another algorithm's state, wrong shapes and
    invalid group values before changing anything, ``copy.deepcopy`` and ``pickle`` keep the whole
    configuration. Unlike ``torch.optim``, a first :meth:`step` with no gradient anywhere raises.

    Args:
        params: an ``nn.Module``, ``named_parameters()``, tensors, or param groups with ``branch``.
        defaults: the subclass's hyperparameters (they win over the shared ones, whose text lives in
            :data:`~lightning_muon.optim.hyperparameters.HYPERPARAMETERS`).
    """

    algorithm = "muon-family"
    #: The algorithm of the matrix branch.
    step_class: type[MatrixStep] = MatrixStep
    #: Checks of this optimizer's hyperparameters that differ from the shared table.
    checks: dict[str, Check] = {}
    #: The paper's (or its reference code's) own setting where the defaults differ from it:
    #: ``cls(params, **cls.paper_settings)`` reproduces it; :attr:`paper_source` names it.
    paper_settings: dict[str, Any] = {}
    paper_source: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        merge_signature(cls)
        document(cls)

    def __init__(
        self,
        params: Any,
        defaults: dict[str, Any],
        *,
        ns_eps: float = 1e-7,
        ns_dtype: str | None = None,
        ns_form: str = "auto",
        adamw_lr_ratio: float = 1.0,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
        max_bucket_numel: int = DEFAULT_MAX_BUCKET_NUMEL,
        compile_elementwise: bool | str = False,
        nonfinite: str = "raise",
        vocab_size: int | None = None,
        structure: StructureSpec = "flatten",
    ) -> None:
        shared = dict(
            ns_eps=ns_eps, ns_dtype=ns_dtype, ns_form=ns_form, adamw_lr_ratio=adamw_lr_ratio,
            adamw_betas=adamw_betas, adamw_eps=adamw_eps, adamw_weight_decay=adamw_weight_decay,
            max_bucket_numel=max_bucket_numel, compile_elementwise=compile_elementwise,
            structure=structure,
        )  # fmt: skip
        defaults = {**shared, **defaults}
        self._validate_group({**defaults, "nonfinite": nonfinite, "vocab_size": vocab_size}, "")
        if not isinstance(params, torch.nn.Module | torch.Tensor):
            params = list(params)
        #: FSDP1 flat views (``use_orig_params=True``): original names and shapes, by ``id`` (else ``None``).
        self._flat_slices = None
        if uses_flat_parameters(params):
            groups, self.routing, self._flat_slices = route_flat(params, vocab_size)
            print_routing(type(self).__name__, self.routing)
        else:
            groups, self.routing = route_parameters(params, vocab_size)
        if not any(g["branch"] == "muon" for g in groups):
            raise ValueError(
                f"{type(self).__name__} got no matrix parameters for its orthogonal branch (all {len(self.routing)} "
                "parameters were routed to AdamW); use torch.optim.AdamW for this model, or mark groups with "
                "branch='muon'. Routing:\n" + str(self.routing)
            )
        self.vocab_size = vocab_size
        self._constructing = True  # torch's __init__ adds the groups routed above
        super().__init__(groups, defaults)
        del self._constructing
        for i, group in enumerate(self.param_groups):
            check_param_group(self, group, f" (param group {i})")
        warn_unmatched_patterns(type(self).__name__, self.param_groups)
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self._capture: set[int] = set()
        self.captured_directions: dict[torch.Tensor, torch.Tensor] = {}
        self._hooks: dict[bool | str, ElementwiseHooks] = {}

    def _validate_group(self, group: dict[str, Any], where: str) -> None:
        try:
            check_group(group, self.checks)
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}: {err}{where}") from None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, routed and checked exactly as the constructor does (:mod:`.param_groups`).

        Plain torch groups (``{"params": [p, ...], "lr": ...}``, ``(name, tensor)`` pairs) work,
        and may become two groups (``muon`` and ``adamw``); a rejected group changes nothing.
        """
        if self.__dict__.get("_constructing"):
            super().add_param_group(param_group)  # routed and checked by __init__
        else:
            add_param_group(self, param_group)

    def _name_of(self, p: torch.Tensor) -> str:
        for group in self.param_groups:
            for name, q in zip(group.get("param_names", ()), group["params"], strict=False):
                if q is p:
                    return name
        return f"<unnamed parameter of shape {tuple(p.shape)}>"

    # ------------------------------------------------------------------ the algorithm
    def orthogonalizer(self, group: dict[str, Any]) -> Orthogonalizer:
        """The orthogonalizer of a matrix group (from ``orthogonalizer``, ``ns_steps``, ``ns_eps``, ``ns_dtype``, ``ns_form``)."""
        dtype = DTYPES[group["ns_dtype"]] if group["ns_dtype"] else None
        return make_orthogonalizer(
            group["orthogonalizer"], group["ns_steps"], group["ns_eps"], dtype, group["ns_form"]
        )

    def matrix_step(self, group: dict[str, Any]) -> MatrixStep:
        """The algorithm of a matrix group, as executors see it."""
        return self.step_class(group, self.orthogonalizer(group))

    # ------------------------------------------------------------------ skipped steps
    @property
    def skipped_steps(self) -> int:
        """Steps skipped for non-finite gradients (``nonfinite="skip"``; reading it syncs the device)."""
        counter = self.__dict__.get("_skip_counter")
        return self.__dict__.get("_skip_base", 0) + (int(counter) if counter is not None else 0)

    @skipped_steps.setter
    def skipped_steps(self, value: int) -> None:
        self.__dict__["_skip_base"], self.__dict__["_skip_counter"] = int(value), None

    def count_skip(self, skipped: torch.Tensor) -> None:
        """Add a device flag to the skip count without reading it."""
        counter = self.__dict__.get("_skip_counter")
        if counter is None or counter.device != skipped.device:
            base = self.skipped_steps
            counter = self.__dict__["_skip_counter"] = torch.zeros((), dtype=torch.int64, device=skipped.device)
            self.__dict__["_skip_base"] = base
        counter.add_(skipped.to(torch.int64))

    # ------------------------------------------------------------------ diagnostics hook
    def capture_directions(self, params: Any) -> None:
        """Record the orthogonalized direction of ``params`` at the next steps (``[]`` stops).

        After each :meth:`step`, ``captured_directions[p]`` holds ``O`` (fp32, matrix view) for
        every requested ``p`` that was updated.
        """
        self._capture = {id(p) for p in params}
        self.captured_directions = {}

    # ------------------------------------------------------------------ executor
    def executor(self) -> Any:
        """The executor of the matrix branch: local, or distributed (DDP replicas, FSDP2 shards).

        Resolved at the first step (the process group may be set up after construction) and again
        whenever the parameters or :func:`lightning_muon.distributed.configure`'s options change.
        """
        options = getattr(self, "distributed_options", None)
        ids = tuple(id(p) for g in self.param_groups for p in g["params"])
        cached = self.__dict__.get("_executor")
        if cached is not None and cached[0] is options and cached[1] == ids:
            return cached[2]
        executor = None
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and self._flat_slices:
            executor = flat_executor_for(
                self._flat_slices,
                self.param_groups,
                options or DistributedOptions(),
                type(self).__name__,
            )
        elif distributed:
            blocked = {id(p): p for g in self.param_groups for p in group_blockings(g)}
            structured = {i for i, p in blocked.items() if is_dtensor(p)}
            named = [  # plain blocked matrices stay local: every replica updates its blocks itself
                (self._name_of(p), p)
                for g in self.param_groups
                if g["branch"] == "muon"
                for p in g["params"]
                if p.ndim >= 2 and (id(p) not in blocked or id(p) in structured)
            ]
            executor = executor_for(
                named,
                self.param_groups,
                options or DistributedOptions(),
                type(self).__name__,
                structured,
            )
            if executor is not None and cached is not None and hasattr(cached[2], "stats"):
                executor.stats = cached[2].stats  # one record across re-plans
        self._executor = (options, ids, executor or _LOCAL)
        return self._executor[2]

    # ------------------------------------------------------------------ step
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
        executor = self.executor()
        proceed, finite = screen_gradients(self, executor)
        if not proceed:
            return loss
        # every group's algorithm and orthogonalizer is built before anything changes
        steps = {id(g): self.matrix_step(g) for g in self.param_groups if g["branch"] == "muon"}
        self.captured_directions = {}
        capture = Capture(self._capture, self.captured_directions)
        for group in self.param_groups:
            if group["branch"] == "adamw":
                adamw_group_step(group, self.state, None if finite is None else ~finite)
                continue
            backend = group["compile_elementwise"]
            if backend not in self._hooks:
                self._hooks[backend] = ElementwiseHooks(backend, type(self).__name__)
            executor.run(
                MatrixGroup(
                    group["params"],
                    steps[id(group)],
                    self.state,
                    float(group["lr"]),  # a one-element tensor lr is accepted
                    group["weight_decay"],
                    group["max_bucket_numel"],
                    self._hooks[backend],
                    capture,
                    id(group),
                    finite,
                    group_blockings(group),
                )
            )
        return loss

    # ------------------------------------------------------------------ state dict
    def state_dict(self) -> dict[str, Any]:
        """The torch state dict; under FSDP1 every parameter carries every state name
        (:func:`~lightning_muon.optim.flat_state.uniform_state`), as ``FSDP.optim_state_dict`` needs."""
        state_dict = super().state_dict()
        return uniform_state(self, state_dict) if self._flat_slices else state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """:meth:`StateDictMixin.load_state_dict`, dropping the padding of :meth:`state_dict` under FSDP1
        first, so that the checks see each parameter's own state names."""
        if self._flat_slices:
            state_dict = without_padding(self, state_dict)
        super().load_state_dict(state_dict)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_flat_slices", None)


document(MuonFamilyOptimizer)
