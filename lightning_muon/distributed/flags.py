"""Agreeing across ranks on which gradients exist and whether they are finite, without host reads.

Every rank must step, skip or raise together, and plan the same buckets (their collectives
deadlock otherwise), so the gradient screen (:func:`~lightning_muon.optim.screening.screen_gradients`)
decides on flags reduced over the ranks. :class:`GradientFlags` serves the DDP/FSDP2 executor
(:class:`~lightning_muon.distributed.engine.DistributedEngine`) and the FSDP1 one
(:class:`~lightning_muon.distributed.flat_engine.FlatShardEngine`).

**One** ``all_reduce`` per step, of one ``int64`` per parameter (``R = W + 1`` for ``W`` ranks)::

    code = has_grad + R·non_finite + R²·holds

``holds``: the rank holds elements of the parameter (always, except FSDP1's empty slices, which
have no gradient); ``has_grad`` counts only where it holds. After the sum, ``code mod R`` counts
the holders with a gradient (``present``), ``code // R mod R`` the ranks with a non-finite one and
``code // R²`` the holders. Presence is consistent when ``present`` is ``0`` or ``holders`` for
every parameter: every rank then plans the same buckets.

**Verified presence.** Each rank remembers the set of its local gradients at the last step whose
reduced codes it read on the host and found consistent, with the reduced ``present`` vector of
that step (the same on every rank).

* *Fast path* (this rank's gradients are that set, and some rank has a gradient): no host read.
  ``consistent = (present == verified present).all()`` is computed on the device and folded into
  the returned flags, ``finite = no_non_finite[index] & ~any_non_finite & consistent``. The screen
  reads ``finite.all()`` once with ``nonfinite="raise"`` and nothing with ``"skip"``.
* *Slow path* (first step, a changed set of local gradients, or none): the codes are read on the
  host (one read). Consistent: the new set is verified and the step proceeds (executors re-plan
  from the gradients present). Partial at the first step (nothing verified, so no plan that all
  ranks share): ``RuntimeError`` — every rank is on the slow path then and raises the same error.
  Partial later: the flags are all false, and the reason is kept for :meth:`GradientFlags.explain`
  (``"raise"``) and :meth:`GradientFlags.align_skipped_step` (``"skip"``).

**Guarantees.** All ranks hold the same verified ``present`` vector (it changes only at a
consistent slow step, where every rank's set equals the new one). If some rank is on the fast
path, any change of any rank's gradients makes ``present`` differ from the verified vector (each
holder adds 0 or 1, so a count of 0 or ``holders`` pins every holder's contribution), hence:

* no change, no read: the step proceeds with the verified plan on every rank;
* a change on some ranks only: ``consistent`` is false on every fast-path rank and the slow-path
  ranks read partial presence, so the step is not taken anywhere. ``"raise"``: the screen's one
  read is false, :meth:`~GradientFlags.explain` reads the codes and every rank raises the same
  ``RuntimeError`` before anything changes. ``"skip"``: fast-path ranks run a masked (no-op) step
  with the verified plan; the changed ranks run the same plan masked
  (:meth:`~GradientFlags.align_skipped_step`: zero gradients for the verified parameters they lack,
  other gradients hidden, all restored after the step) and warn; every rank counts the skip;
* the same change on every rank: every rank is on the slow path, reads consistent presence and
  proceeds with the new plan.

Non-finite values on any rank's slice make every rank's flags false (FSDP1 ranks hold different
parameters' slices, so per-rank flags alone would let one rank step while another skips).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist

PARTIAL = (
    "{owner}: gradients of {names} exist on some ranks only; every rank must compute the same set "
    "of gradients (set unused gradients to zeros, or to None everywhere)"
)
SKIPPED = (
    " — this rank's gradients changed since the last step; the step was skipped on every rank "
    "(no weight or optimizer state changed, counted in skipped_steps)"
)


class GradientFlags:
    """Reduced gradient flags of one executor's parameters (see the module docstring).

    Args:
        params: every parameter of the optimizer, in the same order on every rank.
        names: their names, for error messages.
        group: the process group of the flags.
        owner: the optimizer's name, for error messages.
        holds: whether this rank holds elements of each parameter (default: all).

    Attributes:
        present: by ``id``, whether some rank had the parameter's gradient at the last verified step
            (the FSDP1 executor plans from it).
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        names: list[str],
        group: Any,
        owner: str = "optimizer",
        holds: list[bool] | None = None,
    ) -> None:
        self.params, self.names, self.group, self.owner = params, names, group, owner
        self.world = dist.get_world_size(group)
        self.device = params[0].device
        self.holds = holds if holds is not None else [True] * len(params)
        self._position = {id(p): j for j, p in enumerate(params)}
        R = self.world + 1
        # R²·holds, built once: the per-step codes start from a copy of it
        self._base = torch.tensor([R * R * int(h) for h in self.holds], dtype=torch.int64)
        self._base = self._base.to(self.device)
        self._index: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self.present: dict[int, bool] = {}
        self._verified: tuple[int, ...] | None = None  # local gradients at the last verified step
        self._target: torch.Tensor | None = None  # the reduced ``present`` of that step
        self._anywhere = False  # whether some rank had a gradient then
        self._codes: torch.Tensor | None = None  # the last reduced codes
        # positions with gradients on some ranks only, found on the host at the last step
        self._partial: list[int] | None = None
        self._masked: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self._generation = 0  # numbers the reductions: a restore belongs to one step

    # ------------------------------------------------------------------ the reduction
    def _index_of(self, ids: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(positions, has_grad contributions)`` of a set of local gradients, built once per set."""
        cached = self._index.get(ids)
        if cached is None:
            if len(self._index) >= 8:  # sets rarely alternate; keep a few
                self._index.clear()
            positions = [self._position[i] for i in ids]
            index = torch.tensor(positions, dtype=torch.long).to(self.device)
            has = torch.tensor([int(self.holds[j]) for j in positions], dtype=torch.int64)
            cached = self._index[ids] = (index, has.to(self.device))
        return cached

    def reduce(
        self, params: list[torch.Tensor], finite: torch.Tensor | None, stats: Any = None
    ) -> tuple[torch.Tensor | None, bool]:
        """``(finite, anywhere)`` for the local gradients of ``params`` (``finite`` their flags).

        ``finite`` comes back as device flags, false everywhere unless every rank can take the
        step (``None`` when no rank has a gradient); ``anywhere``: some rank has a gradient.
        Collective: every rank calls it at every step.

        Raises:
            RuntimeError: gradients present on some ranks only at the first step.
        """
        R = self.world + 1
        self._generation += 1
        self._masked, self._partial = [], None  # a masked step that never finished restores nothing
        ids = tuple(map(id, params))
        codes = self._base.clone()
        index = None
        if params:
            index, has = self._index_of(ids)
            codes.index_add_(0, index, has + R * (~finite.to(self.device)).long())
        dist.all_reduce(codes, group=self.group)
        if stats is not None:
            stats.record("all_reduce", codes.numel() * codes.element_size() * (self.world - 1))
        self._codes = codes
        present = codes % R
        ok = ~((codes // R) % R).bool().any()  # no rank has a non-finite gradient
        if self._anywhere and ids == self._verified:  # fast path: nothing read
            return self._flags(index, codes, ok & (present == self._target).all()), True
        counts = codes.tolist()  # slow path: the one host read
        partial = [j for j, c in enumerate(counts) if c % R not in (0, c // (R * R))]
        anywhere = any(c % R for c in counts)
        if not partial:
            self._verified, self._target, self._anywhere = ids, present, anywhere
            self.present = {id(p): c % R > 0 for p, c in zip(self.params, counts, strict=True)}
            return (self._flags(index, codes, ok) if anywhere else None), anywhere
        if not self._anywhere:  # nothing verified: the first step (every rank is here)
            raise RuntimeError(self._message(partial))
        self._partial = partial
        return torch.zeros(max(1, len(params)), dtype=torch.bool, device=self.device), True

    def _flags(
        self, index: torch.Tensor | None, codes: torch.Tensor, ok: torch.Tensor
    ) -> torch.Tensor:
        """Per local gradient: finite on every rank, and the step can be taken everywhere."""
        if index is None:  # no local gradient (FSDP1 empty slices): one flag
            return ok.view(1)
        return ((codes[index] // (self.world + 1)) % (self.world + 1) == 0) & ok

    def _message(self, partial: list[int]) -> str:
        return PARTIAL.format(owner=self.owner, names=", ".join(self.names[j] for j in partial[:5]))

    # ------------------------------------------------------------------ after the reduction
    def explain(self) -> list[str] | None:
        """Why the last flags are false (the screen's error path; reads the codes on the host).

        Returns the names of the parameters with a non-finite gradient on some rank.

        Raises:
            RuntimeError: gradients present on some ranks only.
        """
        if self._partial:
            raise RuntimeError(self._message(self._partial))
        if self._codes is None:
            return None
        R = self.world + 1
        counts = self._codes.tolist()
        partial = [j for j, c in enumerate(counts) if c % R not in (0, c // (R * R))]
        if partial:
            raise RuntimeError(self._message(partial))
        return [self.names[j] for j, c in enumerate(counts) if (c // R) % R]

    def align_skipped_step(self, optimizer: Any) -> None:
        """Before a step that ``finite`` skips (``nonfinite="skip"``): if this rank's gradients are
        present on some ranks only, give it the verified set of gradients for the duration of the
        step, so that it plans the buckets the other ranks plan (their collectives match).

        Verified parameters without a gradient get zeros, gradients of the others are hidden; every
        gradient is restored after the step (a step post-hook of ``optimizer``). Warns.
        """
        if not self._partial:
            return
        verified = set(self._verified or ())
        masked = []
        for p in self.params:
            if id(p) in verified and p.grad is None:
                masked.append((p, None))
                p.grad = torch.zeros_like(p)
            elif id(p) not in verified and p.grad is not None:
                masked.append((p, p.grad))
                p.grad = None
        self._masked = masked
        generation = self._generation

        def restore(*_: Any) -> None:
            handle.remove()
            if self._generation == generation:
                for p, grad in self._masked:
                    p.grad = grad
                self._masked = []

        handle = optimizer.register_step_post_hook(restore)
        warnings.warn(self._message(self._partial) + SKIPPED, UserWarning, stacklevel=2)
