"""Buckets of same-shape matrices: packed state, zero-copy stacks, and the two halves of a step.

A bucket stacks ``N`` same-shape matrices so that ``begin``, the orthogonalizer and ``finish``
each run once for all of them. Fresh state of a bucket gets one storage per key
(:func:`pack_states`), so the stacked state is a view and in-place updates need no copy back; a
one-matrix bucket reads its gradient and state in place. Elsewhere :func:`stack` copies and
:func:`finish_bucket` writes the state back.

Example:
    >>> import torch
    >>> a, b = torch.zeros(2, 3).unbind(0)
    >>> stack([a, b])._base is not None  # consecutive views of one storage: no copy
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, NamedTuple

import torch

from ..core.workspace import Workspace
from .blocks import (
    Blocking,
    Blocks,
    Item,
    block_units,
    count_of,
    fresh_state,
    matrices,
    merge_units,
    parameter_of,
)
from .compiled import ElementwiseHooks
from .step import Capture, MatrixContext, MatrixStep
from .tensors import is_dtensor, local, matrix_shape, state_dtype

#: Default of ``max_bucket_numel``: one bucket in flight keeps a step's temporary memory below
#: ~7 fp32 copies of ``max(max_bucket_numel, largest matrix)`` elements (~13 for SpectralMuon's roots).
DEFAULT_MAX_BUCKET_NUMEL = 1 << 24


class BucketWork(NamedTuple):
    """A bucket between :func:`begin_bucket` and :func:`finish_bucket`."""

    plist: list[Item]
    states: list[dict[str, Any]]
    keys: list[str]
    S: dict[str, torch.Tensor]
    X: torch.Tensor
    finite: torch.Tensor | None = None
    saved: dict[str, torch.Tensor] | None = None


def matrix_buckets(
    params: list[torch.Tensor],
    max_bucket_numel: int,
    blockings: Mapping[torch.Tensor, Blocking] | None = None,
) -> Iterator[tuple[tuple[int, int], list[Item]]]:
    """Same-shape, same-dtype, same-device matrices with gradients, chunked to ``max_bucket_numel``.

    A parameter with a :class:`~.blocks.Blocking` contributes each of its blocks as a matrix of
    the block's shape (as :class:`~.blocks.Blocks` items), so blocks share buckets with other
    parameters' blocks and plain matrices of that shape.
    """
    blockings = blockings or {}
    buckets: dict[tuple, list[Any]] = {}
    for p in params:
        if p.grad is None:
            continue
        blocking = blockings.get(p)
        if blocking is None:
            buckets.setdefault((matrix_shape(local(p).shape), p.dtype, p.device), []).append(p)
            continue
        for shape, b in block_units(p, blocking):
            buckets.setdefault((shape, p.dtype, p.device), []).append((p, b))
    for (shape, _, _), units in buckets.items():
        for chunk in chunks(units, shape, max_bucket_numel):
            yield shape, merge_units(chunk, blockings)


def chunks(items: list[Any], shape: tuple[int, int], max_bucket_numel: int) -> Iterator[list[Any]]:
    """``items`` (matrices of ``shape``) in runs of at most ``max_bucket_numel`` elements (at least one)."""
    per = max(1, max_bucket_numel // max(1, shape[0] * shape[1]))
    for start in range(0, len(items), per):
        yield items[start : start + per]


def bucket_states(
    plist: list[Item], step: MatrixStep, state: MutableMapping[torch.Tensor, dict]
) -> list[dict[str, Any]]:
    """The state dicts of a bucket's items (one per parameter, shared by its blocks), created
    (:func:`~.blocks.fresh_state`) and packed when the whole bucket is fresh."""
    params = [parameter_of(item) for item in plist]
    fresh = not any(state[p] for p in params)
    states = []
    for item, p in zip(plist, params, strict=True):
        s = state[p]
        if not s:
            s.update(fresh_state(step, p, item.blocking if isinstance(item, Blocks) else None))
        states.append(s)
    if fresh:
        pack_states(list({id(s): s for s in states}.values()))
    return states


def begin_bucket(
    plist: list[torch.Tensor],
    states: list[dict[str, Any]],
    step: MatrixStep,
    hooks: ElementwiseHooks,
    workspace: Workspace | None = None,
    finite: torch.Tensor | None = None,
) -> BucketWork:
    """Copy the gradients of the local rows into a scratch stack (in ``workspace``'s ``"grad"``
    slot, or fresh), stack the state, count the step, run ``begin``.

    The stack is the step's own copy in the state dtype, so ``begin`` may overwrite it: the
    orthogonalizer input is then written once (copy, then e.g. the Nesterov look-ahead in place).
    A ``workspace`` view is reused by the next bucket: pass one only when a bucket's ``X`` is
    consumed before the next bucket begins. With a ``finite`` flag the state is saved first, so
    :func:`finish_bucket` can restore it on the device when the flag is false.
    """
    first = parameter_of(plist[0])
    grads = [g for item in plist for g in matrices(item, parameter_of(item).grad, True)]
    shape, dtype, device = (len(grads), *grads[0].shape), state_dtype(first), grads[0].device
    if workspace is not None:
        G = workspace.get("grad", shape, dtype, device)
    else:
        G = torch.empty(shape, dtype=dtype, device=device)
    torch._foreach_copy_(list(G.unbind(0)), grads)
    keys = [k for k, v in states[0].items() if isinstance(v, torch.Tensor)]
    S = {k: stack(state_matrices(plist, states, k)) for k in keys}
    saved = None
    if finite is not None:
        saved = {}
        for k, v in S.items():
            copy = workspace.get(f"saved:{k}", v.shape, v.dtype, v.device) if workspace else None
            saved[k] = v.clone() if copy is None else copy.copy_(v)
    S["step"] += 1
    S["step"] = S["step"].view(-1, 1, 1)
    return BucketWork(plist, states, keys, S, hooks.begin(step, G, S), finite, saved)


def finish_bucket(
    work: BucketWork,
    O: torch.Tensor,
    step: MatrixStep,
    hooks: ElementwiseHooks,
    ctx: MatrixContext,
    capture: Capture,
) -> tuple[torch.Tensor, float]:
    """Capture ``O`` where asked, run ``finish``, write the state back; return ``(U, c)``, the
    update being ``c·U``: for a step with a :meth:`~.step.MatrixStep.static_scale`, ``finish`` is
    skipped and ``U = O`` (the scale is folded into :func:`apply_update`)."""
    if capture.ids:
        capture_directions(capture, work.plist, O)
    factor = step.static_scale(ctx)
    U = O if factor is not None else hooks.finish(step, O, work.S, ctx)
    return store_bucket(work, U), 1.0 if factor is None else factor


def store_bucket(work: BucketWork, U: torch.Tensor) -> torch.Tensor:
    """Write the stacked state ``work.S`` back to the parameters' state; return ``U``.

    Where ``work.finite`` is false the state is restored from ``work.saved`` and ``U`` zeroed.
    """
    if work.saved is not None:  # a false flag restores the state and zeroes the update
        for k, v in work.saved.items():
            target = work.S[k]
            torch.where(work.finite, target, v.view_as(target), out=target)
        U = U.masked_fill_(work.finite.logical_not(), 0.0)
    for k in work.keys:
        targets = [
            t
            for item, s in zip(work.plist, work.states, strict=True)
            for t in (matrices(item, s[k]) if isinstance(item, Blocks) else [local(s[k])])
        ]
        if work.S[k].data_ptr() == targets[0].data_ptr():
            continue  # the stack was a view: the state was updated in place
        torch._foreach_copy_(
            targets, [v.view_as(t) for v, t in zip(work.S[k].unbind(0), targets, strict=True)]
        )
    return U


def apply_update(
    plist: list[Item],
    U: torch.Tensor,
    lr: float,
    weight_decay: float,
    scale: float = 1.0,
    finite: torch.Tensor | None = None,
) -> None:
    """Decoupled weight decay with the base lr, then ``W ← W − lr·scale·U`` (one pass per matrix).

    With a ``finite`` flag the decay factor is ``1 − lr·λ·finite`` (a device tensor: no host read;
    :func:`finish_bucket` has zeroed ``U`` already).

    ``lr == 0`` leaves the weights untouched (torch's distributed checkpoint creates optimizer
    state by stepping with zero gradients and ``lr = 0``).
    """
    if lr == 0:
        return
    weights = [w for item in plist for w in _weights(item)]
    if weight_decay and finite is not None:
        decay = 1.0 - (lr * weight_decay) * finite.to(weights[0].dtype)
        torch._foreach_mul_(weights, decay)
    elif weight_decay:
        torch._foreach_mul_(weights, 1.0 - lr * weight_decay)
    torch._foreach_add_(
        weights,
        [u.view_as(w).to(w.dtype) for u, w in zip(U.unbind(0), weights, strict=True)],
        alpha=-lr * scale,
    )


def state_matrices(
    plist: list[Item], states: list[dict[str, Any]], key: str
) -> list[torch.Tensor]:
    """The per-matrix views of state ``key`` of a bucket's items (0-d for ``step``)."""
    return [m for item, s in zip(plist, states, strict=True) for m in matrices(item, s[key])]


def capture_directions(capture: Capture, plist: list[Item], O: torch.Tensor) -> None:
    """Record the requested directions (fp32, the parameter's matrix view; blocks in their rows)."""
    i = 0
    for item in plist:
        p, count = parameter_of(item), count_of(item)
        if id(p) in capture.ids:
            if isinstance(item, Blocks):
                blocking = item.blocking
                if p not in capture.directions:
                    capture.directions[p] = O.new_zeros(
                        (blocking.total_rows, blocking.columns), dtype=torch.float32
                    )
                for target, block in zip(
                    matrices(item, capture.directions[p]), O[i : i + count], strict=True
                ):
                    target.copy_(block)
            else:
                capture.directions[p] = O[i].detach().float().clone()
        i += count


def _weights(item: Item) -> list[torch.Tensor]:
    """The matrices of an item's weight (views: the update writes through)."""
    if isinstance(item, Blocks):
        return matrices(item, item.param.data)
    return [local(item)]


def pack_states(states: list[dict[str, Any]]) -> None:
    """Give a bucket's fresh state one storage per key: ``state[k]`` become consecutive views.

    :func:`stack` then sees the stacked state without copying it, and the updated state needs no
    copy back. Keys whose tensors differ in shape, dtype or device, and DTensors, stay separate.
    A state replaced later (``load_state_dict``) simply takes the copying path.
    """
    if len(states) < 2:
        return
    for key, first in states[0].items():
        values = [s.get(key) for s in states]
        if not isinstance(first, torch.Tensor) or is_dtensor(first):
            continue
        if not all(
            isinstance(v, torch.Tensor)
            and not is_dtensor(v)
            and (v.shape, v.dtype, v.device) == (first.shape, first.dtype, first.device)
            for v in values
        ):
            continue
        for s, view in zip(states, torch.stack(values).unbind(0), strict=True):
            s[key] = view


def stacked_view(tensors: list[torch.Tensor]) -> torch.Tensor | None:
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


def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack along a new first dim without copying when possible: a single tensor, or tensors
    that are consecutive views of one storage (packed state), become a view, so in-place updates
    of the stack reach them directly; otherwise ``torch.stack`` copies."""
    if len(tensors) == 1:
        return tensors[0].unsqueeze(0)
    view = stacked_view(tensors)
    return view if view is not None else torch.stack(tensors)
