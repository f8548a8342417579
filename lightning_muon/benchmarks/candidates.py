"""The contestants of the step benchmark, each built over its own copy of the same parameters.

Every candidate gets its own ``nn.Parameter`` copies of one seeded set of initial values, and
*shares* one seeded set of gradient tensors (optimizers only read gradients; the benchmark checks
that they are unchanged). Candidates:

* every optimizer of :data:`lightning_muon.optim.registry.OPTIMIZERS`, defaults, on the hidden
  matrices (``<name>``), and ``muon@<dtype>`` with the other Newton–Schulz dtype than the device's
  default (the same-dtype comparison with ``torch.optim.Muon``, which always uses bf16);
* ``torch_muon`` (``torch.optim.Muon``), ``reference_muon`` (the plain fp32 per-matrix loop of
  :mod:`.reference`), ``adamw_foreach`` / ``adamw_fused`` (``torch.optim.AdamW``) on the hidden
  matrices;
* ``muon+fast``, ``normuon+fast``: with ``ns_form="fast"`` (the Gram form of Newton–Schulz for
  wide fp32 matrices, which fp32 does not take by default);
* ``muon+compiled``, ``normuon+compiled``: with ``compile_elementwise=True`` (``torch.compile`` of
  the elementwise hooks; compiled during warm-up; not in the default line-up);
* ``ns``: only our batched Newton–Schulz over the hidden matrices, bucketed as the optimizers do;
* ``adamw_branch``: a :class:`~lightning_muon.Muon` whose AdamW branch holds the auxiliary tensors
  (embeddings, norms, biases); only they have gradients, so ``step()`` runs the gradient check and
  the AdamW branch; ``adamw_branch_kernel``: the branch alone (its ``adamw_group_step``, without the
  step's non-finite gradient screen); against ``adamw_fused_aux``, ``torch.optim.AdamW(fused=True)``
  on the same tensors.

Example:
    >>> import torch
    >>> from lightning_muon.benchmarks.shapes import SHAPE_SETS
    >>> lineup = build_candidates(SHAPE_SETS["small"], ["muon", "reference_muon"], torch.device("cpu"))
    >>> sorted(lineup.candidates)
    ['muon', 'reference_muon']
    >>> lineup.candidates["muon"].run() > 0
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.orthogonalize import JORDAN, default_ns_dtype, newton_schulz
from ..engine.buckets import DEFAULT_MAX_BUCKET_NUMEL
from ..engine.tensors import matrix_shape
from ..optim.adamw_branch import adamw_group_step
from ..optim.muon import Muon
from ..optim.registry import OPTIMIZERS
from .machine import synchronizer
from .reference import ReferenceMuon
from .shapes import Shape, ShapeSet
from .timing import timed

#: AdamW hyperparameters shared by ``adamw_branch`` and ``adamw_fused_aux`` (Muon's defaults: lr 0.02·0.015).
AUX_ADAMW = {"lr": 0.02 * 0.015, "betas": (0.9, 0.95), "eps": 1e-10, "weight_decay": 0.0}
TORCH_CANDIDATES = ("torch_muon", "reference_muon", "adamw_foreach", "adamw_fused")
EXTRA_CANDIDATES = ("ns", "adamw_branch", "adamw_branch_kernel", "adamw_fused_aux")


@dataclass
class Candidate:
    """One timed step over one parameter set.

    Attributes:
        name: candidate name.
        kind: ``"orthogonal"`` (Newton–Schulz on the hidden matrices), ``"adamw"`` (elementwise on
            the hidden matrices) or ``"aux"`` (AdamW on the auxiliary tensors).
        step: performs one step.
        params: the parameters it updates (for state accounting).
        optimizer: the optimizer, if any.
        ns_dtype: the Newton–Schulz compute dtype (the matmul rate it is compared with).
        ns_form: the Newton–Schulz form it runs (``"auto"``/``"fast"``: ours by shape and dtype;
            ``"direct"``: ``torch.optim.Muon`` and the reference loop), for counting its FLOPs.
    """

    name: str
    kind: str
    step: Callable[[], Any]
    sync: Callable[[], None]
    params: list[torch.Tensor] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None
    ns_dtype: torch.dtype | None = None
    clock: str = "wall"
    ns_form: str = "auto"

    def run(self) -> float:
        """One step; seconds on ``clock``, synchronised on accelerators."""
        return timed(self.step, self.sync, self.clock)


def other_ns_dtype(device: torch.device) -> torch.dtype:
    """The Newton–Schulz dtype that is *not* the device default (bf16 on CPU, fp32 on CUDA)."""
    return torch.float32 if default_ns_dtype(device) == torch.bfloat16 else torch.bfloat16


GRAM_CANDIDATES = ("muon+fast", "normuon+fast")
COMPILED_CANDIDATES = ("muon+compiled", "normuon+compiled")


def candidate_names(device: torch.device, compiled: bool = False) -> list[str]:
    """Every candidate name, in report order (``compiled``: with the ``+compiled`` variants)."""
    other = str(other_ns_dtype(device)).removeprefix("torch.")
    extra = COMPILED_CANDIDATES if compiled else ()
    return [
        *OPTIMIZERS,
        f"muon@{other}",
        *GRAM_CANDIDATES,
        *extra,
        *TORCH_CANDIDATES,
        *EXTRA_CANDIDATES,
    ]


class TensorBank:
    """Seeded initial values and shared gradients for a list of shapes."""

    def __init__(self, shapes: Sequence[Shape], device: torch.device, seed: int) -> None:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.values = [(0.02 * torch.randn(s, generator=gen)).to(device) for s in shapes]
        self.grads = [torch.randn(s, generator=gen).to(device) for s in shapes]

    def parameters(self) -> list[torch.nn.Parameter]:
        """Fresh parameters (copies of the seeded values) whose ``.grad`` are the shared gradients."""
        params = []
        for value, grad in zip(self.values, self.grads, strict=True):
            p = torch.nn.Parameter(value.clone())
            p.grad = grad
            params.append(p)
        return params

    def checksum(self) -> float:
        """A number that changes if any gradient is modified."""
        return float(sum(g.double().sum() + g.double().square().sum() for g in self.grads))


def _optimizer_candidate(
    name: str, kind: str, opt: torch.optim.Optimizer, params: list, sync: Callable, dtype: Any
) -> Candidate:
    return Candidate(name, kind, opt.step, sync, params, opt, dtype)


def _branch_only(opt: torch.optim.Optimizer) -> Callable[[], None]:
    """The AdamW branch of ``opt`` without the rest of its ``step()``."""
    group = next(g for g in opt.param_groups if g["branch"] == "adamw")

    @torch.no_grad()
    def step() -> None:
        adamw_group_step(group, opt.state)

    return step


def _ns_step(params: list[torch.Tensor], device: torch.device) -> Callable[[], None]:
    """Our batched Newton–Schulz over the gradients of ``params``, stacked and chunked as the optimizers do."""
    by_shape: dict[tuple[int, int], list[torch.Tensor]] = {}
    for p in params:
        shape = matrix_shape(p.shape)
        by_shape.setdefault(shape, []).append(p.grad.reshape(shape))
    stacks = []
    for (m, n), grads in by_shape.items():
        per = max(1, DEFAULT_MAX_BUCKET_NUMEL // (m * n))
        stacks += [torch.stack(grads[i : i + per]) for i in range(0, len(grads), per)]
    dtype = default_ns_dtype(device)

    def step() -> None:
        for X in stacks:
            newton_schulz(X, JORDAN, steps=5, dtype=dtype)

    return step


@dataclass
class Lineup:
    """The candidates of one shape set and the tensor banks they were built from."""

    candidates: dict[str, Candidate]
    hidden: TensorBank
    aux: TensorBank

    def gradient_checksum(self) -> float:
        """Changes if any candidate wrote into the shared gradients."""
        return self.hidden.checksum() + self.aux.checksum()


def build_candidates(
    shape_set: ShapeSet,
    names: Sequence[str],
    device: torch.device,
    seed: int = 0,
    clock: str = "wall",
) -> Lineup:
    """Build the named candidates over ``shape_set`` on ``device`` (unknown names raise ``ValueError``)."""
    valid = candidate_names(device, compiled=True)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"Unknown candidates: {unknown}; valid names are {valid}")
    sync = synchronizer(device)
    hidden = TensorBank([s for _, s in shape_set.hidden], device, seed)
    needs_aux = any(n.startswith(("adamw_branch", "adamw_fused_aux")) for n in names)
    aux = TensorBank([s for _, s in shape_set.aux] if needs_aux else [], device, seed + 1)
    default = default_ns_dtype(device)
    out: dict[str, Candidate] = {}
    for name in names:
        if name in OPTIMIZERS:
            ps = hidden.parameters()
            opt = OPTIMIZERS[name]([{"params": ps, "branch": "muon"}])
            out[name] = _optimizer_candidate(name, "orthogonal", opt, ps, sync, default)
        elif name.endswith(("+compiled", "+fast")):
            base, variant = name.split("+")
            ps = hidden.parameters()
            knob = {"ns_form": "fast"} if variant == "fast" else {"compile_elementwise": True}
            opt = OPTIMIZERS[base]([{"params": ps, "branch": "muon"}], **knob)
            out[name] = _optimizer_candidate(name, "orthogonal", opt, ps, sync, default)
            out[name].ns_form = opt.param_groups[0]["ns_form"]
        elif name.startswith("muon@"):
            dtype = other_ns_dtype(device)
            ps = hidden.parameters()
            opt = Muon([{"params": ps, "branch": "muon"}], ns_dtype=name.split("@", 1)[1])
            out[name] = _optimizer_candidate(name, "orthogonal", opt, ps, sync, dtype)
        elif name == "torch_muon":
            ps = hidden.parameters()
            opt = torch.optim.Muon(ps, lr=0.02, momentum=0.95, nesterov=True)
            out[name] = _optimizer_candidate(name, "orthogonal", opt, ps, sync, torch.bfloat16)
            out[name].ns_form = "direct"
        elif name == "reference_muon":
            ps = hidden.parameters()
            out[name] = _optimizer_candidate(
                name, "orthogonal", ReferenceMuon(ps), ps, sync, torch.float32
            )
            out[name].ns_form = "direct"
        elif name in ("adamw_foreach", "adamw_fused"):
            ps = hidden.parameters()
            flag = {"fused": True} if name == "adamw_fused" else {"foreach": True}
            opt = torch.optim.AdamW(ps, **AUX_ADAMW, **flag)
            out[name] = _optimizer_candidate(name, "adamw", opt, ps, sync, None)
        elif name == "ns":
            ps = hidden.parameters()
            out[name] = Candidate(name, "orthogonal", _ns_step(ps, device), sync, [], None, default)
        elif name.startswith("adamw_branch"):
            ps = aux.parameters()
            idle = torch.nn.Parameter(torch.zeros(2, 2, device=device))  # no grad: skipped
            opt = Muon([{"params": ps, "branch": "adamw"}, {"params": [idle], "branch": "muon"}])
            out[name] = _optimizer_candidate(name, "aux", opt, ps, sync, None)
            if name == "adamw_branch_kernel":
                out[name].step = _branch_only(opt)
        else:  # adamw_fused_aux
            ps = aux.parameters()
            opt = torch.optim.AdamW(ps, **AUX_ADAMW, fused=True)
            out[name] = _optimizer_candidate(name, "aux", opt, ps, sync, None)
    for cand in out.values():
        cand.clock = clock
    return Lineup(out, hidden, aux)
