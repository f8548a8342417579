"""Gradient screening before a step: unsupported gradients, non-finite values, gradients nowhere.

Nothing is touched before the screen passes. Under an executor shared by several ranks the
decisions are taken on the reduced flags, so every rank skips, raises or steps together.

Example:
    >>> import torch
    >>> finite_flags([torch.zeros(0, 5), torch.tensor([1.0, float("nan")]), torch.full((2,), 3e38)]).tolist()
    [True, False, True]
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.tensors import local

FIRST_STEP_WITHOUT_GRADIENTS = (
    "{name}: the first step found no gradient on any of its parameters, so it holds tensors the model "
    "no longer trains (e.g. built from model.parameters() before FSDP2's fully_shard replaced them, as the "
    "stock LightningCLI --optimizer does). Build it at fit time from the live parameters: "
    "lightning_muon.cli.MuonLightningCLI, lightning_muon.MuonMixin, or "
    "lightning_muon.build_optimizer(self, ...) inside configure_optimizers."
)


def finite_flags(grads: list[torch.Tensor]) -> torch.Tensor:
    """``isfinite`` of each gradient as a bool vector on the gradients' device (an empty one is finite).

    Exact and without a host read: a tensor is finite iff its minimum and maximum are (NaN
    propagates through both, ``+inf`` shows in the maximum, ``-inf`` in the minimum), and
    ``aminmax`` reads each gradient once. A 2-norm screen would also flag huge finite values whose
    squares overflow, and sorting those out needs the host.
    """
    true = torch.ones((), dtype=torch.bool, device=grads[0].device)
    return torch.stack(
        [torch.isfinite(torch.stack(torch.aminmax(g))).all() if g.numel() else true for g in grads]
    )


def screen_gradients(optimizer: Any, executor: Any) -> tuple[bool, torch.Tensor | None]:
    """``(step, finite)``: whether to step, and the device flag that masks the step (or ``None``).

    ``nonfinite="raise"`` reads one flag on the host and raises on a non-finite gradient, so a
    step that proceeds has ``finite=None``. ``nonfinite="skip"`` reads nothing: the step runs with
    ``finite`` (0-d bool), which executors and the AdamW branch use to leave every weight and
    state unchanged when it is false (as fused AdamW's ``found_inf``), and the skip is counted on
    the device. Touches nothing itself, except on a rank of a distributed executor whose
    gradients exist on some ranks only (``"skip"``): it runs the skipped step with the gradients
    the other ranks plan for, restored after the step
    (:mod:`lightning_muon.distributed.flags`).

    Raises:
        RuntimeError: sparse or complex gradients, a first step without any gradient on any rank,
            or (``"raise"``, and at the first step) gradients present on some ranks only.
        FloatingPointError: a non-finite gradient with ``nonfinite="raise"``.
    """
    name = type(optimizer).__name__
    grads, params = [], []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            for kind, bad in (("sparse", p.grad.is_sparse), ("complex", p.grad.is_complex())):
                if bad:
                    raise RuntimeError(
                        f"{name} does not support {kind} gradients: {optimizer._name_of(p)}"
                    )
            params.append(p)
            grads.append(local(p.grad))
    finite = finite_flags(grads) if grads else None
    finite, anywhere = executor.reduce_gradient_flags(params, finite)  # collective under DDP/FSDP
    if not anywhere and not optimizer.state:
        raise RuntimeError(FIRST_STEP_WITHOUT_GRADIENTS.format(name=name))
    if finite is None:
        return True, None
    every = finite.all()
    if optimizer.nonfinite == "skip":
        optimizer.count_skip(~every)
        align = getattr(executor, "align_skipped_step", None)
        if align is not None:  # a rank whose gradients differ from the others' plans what they plan
            align(optimizer)
        return True, every
    if bool(every):  # the one host read of a step
        return True, None
    explain = getattr(executor, "explain_flags", None)
    bad = explain() if explain is not None else None  # raises for gradients on some ranks only
    if bad is None:
        bad = [
            optimizer._name_of(p) for p, ok in zip(params, finite.tolist(), strict=True) if not ok
        ]
    raise FloatingPointError(
        f"{name}: non-finite gradient in {', '.join(bad)}; no weight or optimizer state was "
        "changed. Construct with nonfinite='skip' to skip such steps instead."
    )
