"""Orthogonalization: Newton–Schulz iterations and the exact polar factor.

For a matrix ``X = U Σ Vᵀ`` (thin SVD) the *polar factor* is ``polar(X) = U Vᵀ``: every
singular value replaced by 1. Newton–Schulz approximates it with ``K`` odd quintic steps

.. math::

    X_0 = X / (s·‖X‖_F + ε), \\qquad
    A_k = X_k X_kᵀ, \\quad X_{k+1} = a_k X_k + (b_k A_k + c_k A_k^2) X_k,

which map each singular value ``x ↦ a x + b x³ + c x⁵``. All functions accept stacked
matrices ``(..., m, n)`` and orthogonalize every matrix of the stack in one batched call.
Tall matrices are transposed so the Gram matrix is ``min(m, n)²``.

Two exact rewritings of the same iteration, chosen by shape and dtype (:func:`newton_schulz`):

* *direct*: ``X_{k+1} = P_k X_k`` with ``P_k = a_k I + b_k A_k + c_k A_k²``;
  ``T·(4m²n + 2m³)`` FLOPs;
* *Gram*: every ``P_k`` is a polynomial in ``A_0``, so they commute and
  ``A_{k+1} = A_k P_k²``, ``X_T = (P_{T-1}⋯P_0) X_0``: the ``m × n`` iterate is touched only
  to form ``A_0`` and to apply the product, ``4m²n + (8T-6)m³`` FLOPs, 44% fewer for
  ``n = 4m`` at ``T = 5``. It is restarted from the iterate every :data:`GRAM_SEGMENT` steps
  (the product's norm grows like ``a^T``, and with it the rounding error); it is
  chosen automatically for fp64 only, for ``n ≥`` :data:`GRAM_ASPECT` ``· m``; ``form="fast"``
  takes it for wide fp32 matrices too (the CPU speed option), ``form="gram"`` forces it.

Example:
    >>> import torch
    >>> X = torch.randn(3, 8, 16)
    >>> O = newton_schulz(X, JORDAN)
    >>> O.shape
    torch.Size([3, 8, 16])
    >>> bool((torch.linalg.svdvals(O) < 1.25).all())
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .ns_dtype import default_ns_dtype
from .workspace import Workspace, thread_workspace

Coefficients = tuple[float, float, float]


@dataclass(frozen=True)
class NewtonSchulzTable:
    """A Newton–Schulz coefficient schedule and the normalisation it was designed for.

    Attributes:
        name: short name used in error messages and docs.
        coefficients: one ``(a, b, c)`` per step; steps beyond the table repeat its last entry.
        norm_scale: the input is divided by ``norm_scale·‖X‖_F + eps`` (Polar Express needs 1.02).
    """

    name: str
    coefficients: tuple[Coefficients, ...]
    norm_scale: float = 1.0

    def schedule(self, steps: int) -> tuple[Coefficients, ...]:
        """The coefficients for ``steps`` iterations (the last entry repeats)."""
        table = self.coefficients
        return tuple(table[min(k, len(table) - 1)] for k in range(steps))


#: Keller Jordan's quintic, the same at every step (Muon reference and ``torch.optim.Muon``).
JORDAN = NewtonSchulzTable("jordan", ((3.4445, -4.7750, 2.0315),))

#: You Jiacheng's 5-step table (microsoft/dion ``zeropower_via_newtonschulz5``).
YOU = NewtonSchulzTable("you", (
    (4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377), (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046), (2.8366, -3.0525, 1.2012),
))  # fmt: skip

#: Polar Express 5-step table (Amsel et al. 2025; modded-nanogpt, dion), designed for ``X/(1.02‖X‖_F)``.
POLAR_EXPRESS = NewtonSchulzTable(
    "polar_express",
    (
        (8.156554524902461, -22.48329292557795, 15.878769915207462),
        (4.042929935166739, -2.808917465908714, 0.5000178451051316),
        (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
        (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
        (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
    ),
    norm_scale=1.02,
)

NAMED_TABLES: dict[str, NewtonSchulzTable] = {t.name: t for t in (JORDAN, YOU, POLAR_EXPRESS)}
ORTHOGONALIZER_NAMES = (*NAMED_TABLES, "svd")


def _as_batch(X: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    """View ``(..., m, n)`` as ``(B, m, n)``; returns the view and the original leading shape."""
    lead = X.shape[:-2]
    return X.reshape(-1, X.size(-2), X.size(-1)), lead


#: Shortest aspect ratio ``n/m`` (after transposing tall inputs) that takes the Gram form.
GRAM_ASPECT = 2.5
#: Gram-form steps between restarts from the iterate (bounds ``‖P_{k}⋯P_0‖`` by about ``a^5``).
GRAM_SEGMENT = 5
#: Dtypes whose ``"auto"`` form may be Gram. Not fp32: there the Gram form's error against the exact
#: iteration grows 30-50x on ill-conditioned inputs (1.3e-4 vs 2.8e-6 at condition number 1e4), enough
#: to break sharded == single-process parity; ``form="fast"`` (or ``"gram"``) opts in.
_GRAM_DTYPES = (torch.float64,)
NS_FORMS = ("auto", "fast", "direct", "gram")


def ns_form(m: int, n: int, dtype: torch.dtype, form: str = "auto") -> str:
    """``"gram"`` or ``"direct"``: the form :func:`newton_schulz` runs for ``m × n`` in ``dtype``.

    ``form``: ``"auto"`` (Gram for wide fp64 only), ``"fast"`` (Gram for wide fp32 too: the CPU
    speed option), or ``"direct"``/``"gram"`` (forced).
    """
    if form not in NS_FORMS:
        raise ValueError(f"Invalid form: {form!r}; expected one of {NS_FORMS}")
    if form in ("direct", "gram"):
        return form
    dtypes = _GRAM_DTYPES if form == "auto" else (torch.float32, torch.float64)
    m, n = min(m, n), max(m, n)
    return "gram" if dtype in dtypes and n >= GRAM_ASPECT * m else "direct"


def ns_flops(
    m: int, n: int, steps: int, dtype: torch.dtype = torch.float32, form: str = "auto"
) -> int:
    """FLOPs of the matrix products :func:`newton_schulz` runs on one ``m × n`` matrix.

    Direct form ``T(4a²b + 2a³)`` (``a = min(m, n)``, ``b = max(m, n)``); Gram form
    ``4a²b + (8L - 6)a³`` per restart segment of ``L`` steps; ``form`` as in :func:`ns_form`.

    Example:
        >>> ns_flops(768, 3072, 5, torch.float32)  # direct
        40768634880
        >>> ns_flops(768, 3072, 5, torch.float32, form="gram")
        22649241600
    """
    a, b = min(m, n), max(m, n)
    if ns_form(a, b, dtype, form) == "direct":
        return steps * (4 * a * a * b + 2 * a**3)
    total = 0
    for start in range(0, steps, GRAM_SEGMENT):
        length = min(GRAM_SEGMENT, steps - start)
        total += 4 * a * a * b + (8 * length - 6) * a**3
    return total


def _product(
    P: torch.Tensor, Y: torch.Tensor, buffer: torch.Tensor, tall: bool, a: float = 0.0
) -> torch.Tensor:
    """``a Y + P Y`` written into ``buffer``; with ``tall``, stored as ``a Yᵀ + Yᵀ Pᵀ`` (the
    caller's layout, so no elementwise pass runs on a transposed view). Returns the ``m × n`` view."""
    count, m, n = Y.shape
    left, right = (Y.mT, P.mT) if tall else (P, Y)
    out = buffer.view(count, n, m) if tall else buffer.view(count, m, n)
    if a:
        torch.baddbmm(Y.mT if tall else Y, left, right, beta=a, out=out)
    else:
        torch.bmm(left, right, out=out)
    return out.mT if tall else out


def _target(buffers: tuple, k: int, last: bool) -> torch.Tensor:
    """Where product ``k`` writes: the fresh result buffer for the last one, if there is one."""
    return buffers[2] if last and buffers[2] is not None else buffers[(k + 1) % 2]


def _direct(
    Y: torch.Tensor, schedule: Sequence[Coefficients], buffers: tuple, tall: bool, ws: Workspace
) -> torch.Tensor:
    """``Y ← (aI + bA + cA²) Y`` with ``A = Y Yᵀ``, ping-ponging between two ``buffers``.

    In fp32/fp64 ``a`` is folded into ``P``'s diagonal (no pass over ``Y``). In bf16/fp16 that
    fold would round ``a + bA_ii + c(A²)_ii`` (a cancellation) to 8 or 11 bits, doubling the error;
    there ``a Y + (bA + cA²) Y`` is fused in one ``baddbmm`` that rounds once, as
    ``torch.optim.Muon`` does.
    """
    gram = Y.shape[:-1] + Y.shape[-2:-1]
    A = ws.get("ns_gram", gram, Y.dtype, Y.device)
    P = ws.get("ns_poly", gram, Y.dtype, Y.device)
    diagonal = P.diagonal(dim1=-2, dim2=-1)
    fold = Y.dtype in (torch.float32, torch.float64)
    for k, (a, b, c) in enumerate(schedule):
        torch.bmm(Y, Y.mT, out=A)
        torch.baddbmm(A, A, A, beta=b, alpha=c, out=P)
        if fold:
            diagonal.add_(a)
        last = k == len(schedule) - 1
        Y = _product(P, Y, _target(buffers, k, last), tall and last, 0.0 if fold else a)
    return Y


def _gram(
    Y: torch.Tensor, schedule: Sequence[Coefficients], buffers: tuple, tall: bool, ws: Workspace
) -> torch.Tensor:
    """The same iterates through ``A_{k+1} = A_k P_k²`` and ``Q = P_{T-1}⋯P_0``, restarted every segment."""
    gram = Y.shape[:-1] + Y.shape[-2:-1]
    A, P, Q, R = (ws.get(f"ns_gram_{i}", gram, Y.dtype, Y.device) for i in range(4))
    diagonal = P.diagonal(dim1=-2, dim2=-1)
    starts = range(0, len(schedule), GRAM_SEGMENT)
    for i, start in enumerate(starts):
        segment = schedule[start : start + GRAM_SEGMENT]
        torch.bmm(Y, Y.mT, out=A)
        for k, (a, b, c) in enumerate(segment):
            torch.baddbmm(A, A, A, beta=b, alpha=c, out=P)
            diagonal.add_(a)
            if k == 0:
                Q.copy_(P)
            else:
                torch.bmm(P, Q, out=R)
                Q, R = R, Q
            if k < len(segment) - 1:
                torch.bmm(A, P, out=R)
                torch.bmm(R, P, out=A)
                A.add_(A.mT.clone()).mul_(0.5)  # keep A symmetric against rounding
        last = i == len(starts) - 1
        Y = _product(Q, Y, _target(buffers, i, last), tall and last)
    return Y


def normalize_into(
    batch: torch.Tensor, out: torch.Tensor, norm_scale: float = 1.0, eps: float = 1e-7
) -> torch.Tensor:
    """Write ``X / (norm_scale·‖X‖_F + eps)`` of each stacked matrix into ``out`` (any float dtype).

    Overflow-safe without a host read: ``X`` is divided by ``s = max|X|`` first (every entry of
    ``X/s`` is at most 1, so no square overflows even at fp32's largest finite values), then by
    ``norm_scale·‖X/s‖_F + eps/s``, the same quotient. Three reads of ``X`` (max, min, the
    division), one write of ``out`` and one pass over it; no temporary of ``X``'s size.
    """
    big = torch.maximum(
        batch.amax(dim=(-2, -1), keepdim=True), batch.amin(dim=(-2, -1), keepdim=True).neg()
    )
    big = torch.where(big > 0, big, torch.ones_like(big))
    if out.dtype != torch.float16:
        # Cast first, then divide in ``out``'s dtype: a mixed-dtype division would compute into a
        # temporary of ``X``'s size. ``s`` is rounded to ``out``'s dtype; any ``s`` gives the same quotient.
        limit = torch.finfo(out.dtype).max
        narrower = limit < torch.finfo(batch.dtype).max
        big = (big.clamp(max=limit) if narrower else big).to(out.dtype)
        out.copy_(batch)
        if narrower:  # bf16: entries within 0.4% of fp32's max round to inf
            out.nan_to_num_(posinf=limit, neginf=-limit)
        out.div_(big)
    else:  # fp16 cannot hold X's range: divide first (through a temporary)
        torch.div(batch, big, out=out)
    # All in ``out``'s dtype: a wider norm would copy ``out`` (bf16 rounds the norm by ≤ 2⁻⁹).
    norm = torch.linalg.vector_norm(out, dim=(-2, -1), keepdim=True)
    return out.div_(norm * norm_scale + eps / big.to(norm.dtype))


def newton_schulz(
    X: torch.Tensor,
    table: NewtonSchulzTable = JORDAN,
    steps: int = 5,
    eps: float = 1e-7,
    dtype: torch.dtype | None = None,
    form: str = "auto",
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """Approximate ``polar(X)`` of every matrix in ``X (..., m, n)`` with ``steps`` quintic iterations.

    In fp32/fp64 the ``a X`` term is folded into ``P``'s diagonal (no elementwise pass over the
    ``m × n`` iterate). The scratch (``2mn + 2m²`` elements per matrix for the direct form,
    ``2mn + 4m²`` for the Gram form, ``m ≤ n``) lives in a :class:`~.workspace.Workspace` that
    outlives the call, so repeated calls allocate only their result; the input normalisation is
    overflow-safe (:func:`normalize_into`); a tall input is normalised and returned in its own
    layout (the products read and write it transposed), so the output is contiguous.

    Args:
        X: one matrix or a stack of same-shape matrices.
        table: coefficient schedule (and its input normalisation).
        steps: number of iterations.
        eps: added to the scaled Frobenius norm, so a zero input gives a zero output.
        dtype: compute dtype; ``None`` picks :func:`~lightning_muon.core.ns_dtype.default_ns_dtype`
            for ``X``'s device (bf16 where the hardware multiplies it fast, else fp32).
        form: ``"auto"`` or ``"fast"`` (chosen by shape and dtype, :func:`ns_form`), ``"direct"``
            or ``"gram"``.
        workspace: where the scratch lives (default: this thread's shared workspace).

    Returns:
        A new tensor of ``X``'s shape and dtype (computed in ``dtype``).
    """
    if X.ndim < 2:
        raise ValueError(f"newton_schulz needs matrices (..., m, n), got shape {tuple(X.shape)}")
    if form not in NS_FORMS:
        raise ValueError(f"Invalid form: {form!r}; expected one of {NS_FORMS}")
    if X.numel() == 0:
        return torch.zeros_like(X)
    ws = workspace if workspace is not None else thread_workspace()
    out_dtype = X.dtype
    compute = dtype or default_ns_dtype(X.device)
    batch, lead = _as_batch(X)
    Y0 = ws.get("ns_iterate", batch.shape, compute, X.device)
    normalize_into(batch, Y0, table.norm_scale, eps)
    tall = batch.size(-2) > batch.size(-1)
    Y = Y0.mT if tall else Y0  # m ≤ n from here on
    spare = ws.get("ns_spare", (Y0.numel(),), compute, X.device)
    # The last product writes the result: a fresh tensor when no cast follows.
    final = torch.empty(Y0.numel(), dtype=compute, device=X.device) if compute == out_dtype else None
    iterate = _gram if ns_form(*Y.shape[-2:], compute, form) == "gram" else _direct
    Y = iterate(Y, table.schedule(steps), (Y0.view(-1), spare, final), tall, ws)
    if tall:
        Y = Y.mT
    result = Y.reshape(*lead, *Y.shape[-2:])
    if final is not None and result.data_ptr() == final.data_ptr():
        return result
    return result.to(out_dtype, copy=True)


def exact_polar(X: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    """The exact polar factor ``U Vᵀ`` of each matrix, computed by SVD in float64.

    Singular values at or below ``rtol·σ_max`` (default: machine precision of ``X``'s dtype times
    ``max(m, n)``) are mapped to 0, the same limit Newton–Schulz has on rank-deficient input;
    a zero matrix maps to zero.
    """
    if X.numel() == 0:
        return torch.zeros_like(X)
    X64 = X.to(torch.float64)
    U, S, Vh = torch.linalg.svd(X64, full_matrices=False)
    if rtol is None:
        rtol = torch.finfo(X.dtype).eps * max(X.shape[-2:])
    keep = rtol * S.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny) < S
    return ((U * keep.unsqueeze(-2).to(U.dtype)) @ Vh).to(X.dtype)


def custom_table(rows: Sequence[Sequence[float]]) -> NewtonSchulzTable:
    """Validate a user coefficient table (a non-empty sequence of finite ``(a, b, c)`` triples)."""
    try:
        coefficients = tuple((float(a), float(b), float(c)) for a, b, c in rows)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"Invalid orthogonalizer: {rows!r}; a custom table is a list of (a, b, c) triples"
        ) from err
    if not coefficients or not bool(torch.isfinite(torch.tensor(coefficients)).all()):
        raise ValueError(
            f"Invalid orthogonalizer: {rows!r}; a custom table needs at least one finite (a, b, c) triple"
        )
    return NewtonSchulzTable("custom", coefficients)
