"""The hyperparameters of the Muon family, once: their meaning, their checks, their docs.

Every optimizer's param groups carry keys from :data:`HYPERPARAMETERS`; :func:`check_group`
validates those a group has (naming the argument and the value), and :func:`document` completes
a class's ``Args:`` section from this table, so each optimizer documents only what is its own
(the CLI and ``help()`` read the completed text).

Example:
    >>> check_group({"lr": 0.02, "momentum": 0.95, "nesterov": True})
    >>> check_group({"momentum": 1.5})
    Traceback (most recent call last):
    ...
    ValueError: Invalid momentum: 1.5 (expected 0.0 <= momentum < 1.0)
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..core.orthogonalize import NS_FORMS
from ..core.orthogonalizers import DTYPES, check_orthogonalizer
from ..core.scaling import SCALE_RULES
from ..core.spectral import SPECTRAL_POWERS
from ..core.validation import (
    check_betas,
    check_bool,
    check_choice,
    check_int,
    check_positive,
    check_range,
)
from .structure import check_structure

Check = Callable[[str, Any], None]
#: What ``orthogonalizer=`` accepts on the command line: a name or ``(a, b, c)`` triples.
OrthogonalizerSpec = str | Sequence[tuple[float, float, float]]


@dataclass(frozen=True)
class Hyperparameter:
    """A hyperparameter's one-line doc and its check ``check(name, value)`` (raises ``ValueError``)."""

    doc: str
    check: Check | None = None


def _nonnegative(name: str, value: Any) -> None:
    check_range(name, value, 0.0)


def _unit(name: str, value: Any) -> None:
    check_range(name, value, 0.0, 1.0)


def _choice(choices: tuple[Any, ...]) -> Check:
    return partial(_check_choice, choices=choices)


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    check_choice(name, value, choices)


def _optional_choice(choices: tuple[Any, ...]) -> Check:
    def check(name: str, value: Any) -> None:
        if value is not None:
            check_choice(name, value, choices)

    return check


def _integer(low: int, high: int) -> Check:
    return lambda name, value: check_int(name, value, low, high)


def _power(name: str, value: Any) -> None:
    if isinstance(value, bool) or value not in SPECTRAL_POWERS:
        check_choice(name, None if isinstance(value, bool) else value, SPECTRAL_POWERS)


def _backend(name: str, value: Any) -> None:
    if isinstance(value, bool):
        return
    backends: list[str] = []
    if isinstance(value, str) and value:
        from torch._dynamo import list_backends  # only when a backend is named: a heavy import

        backends = list_backends(exclude_tags=())
        if value in backends:
            return
    raise ValueError(
        f"Invalid {name}: {value!r} (expected False, True (inductor) or a torch.compile backend name"
        + (f": {', '.join(backends)}" if backends else "")
        + ")"
    )


H = Hyperparameter
#: Every hyperparameter a Muon-family param group may carry.
HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "params": H("an ``nn.Module``, ``named_parameters()``, tensors, or param groups with ``branch``."),
    "lr": H("learning rate η.", _nonnegative),
    "momentum": H("EMA coefficient β of the momentum.", _unit),
    "nesterov": H("use the Nesterov look-ahead ``(1-β)G + βM`` as the orthogonalizer input.", check_bool),
    "weight_decay": H("decoupled weight decay λ (``W ← W(1-ηλ)``).", _nonnegative),
    "eps": H("ε of the adaptive denominator.", check_positive),
    "beta2": H("β2 of the per-row second moment.", _unit),
    "betas": H("Adam (β1, β2).", check_betas),
    "alpha": H("weight α of the variance against the squared signal.", _nonnegative),
    "sign_stabilize": H("orthogonalize ``sign(M)`` instead of ``M``.", check_bool),
    "power": H("the spectral power p, one of 0, 0.25, 0.5, 1.", _power),
    "direction": H("``\"adam\"`` or ``\"momentum\"``.", _choice(("adam", "momentum"))),
    "spectral_method": H(
        "``\"newton\"`` (official coupled iteration) or ``\"svd\"`` (exact, float64).",
        _choice(("newton", "svd")),
    ),
    "spectral_iters": H("coupled Newton iterations.", _integer(1, 200)),
    "spectral_eps": H("Tikhonov floor of the Gram matrix.", check_positive),
    "ns_steps": H("Newton–Schulz iterations.", _integer(1, 99)),
    "orthogonalizer": H(
        "``\"jordan\"``, ``\"you\"``, ``\"polar_express\"``, ``\"svd\"`` (exact), a list of ``(a, b, c)`` "
        "triples, or a :class:`~lightning_muon.core.orthogonalizers.Orthogonalizer`.",
        lambda name, value: check_orthogonalizer(value),
    ),
    "scale": H(
        "lr scale rule: ``\"keller\"`` sqrt(max(1, m/n)), ``\"moonlight\"`` rms_target·sqrt(max(m, n)), "
        "``\"spectral\"`` sqrt(m/n), ``\"rms\"`` (RMS aligned to rms_target each step) or ``\"none\"``.",
        _choice(SCALE_RULES),
    ),
    "rms_target": H("the update RMS of the ``\"moonlight\"`` and ``\"rms\"`` rules.", check_positive),
    "ns_eps": H("epsilon of the Newton–Schulz input normalisation ``X/(‖X‖_F + eps)``.", check_positive),
    "ns_dtype": H(
        "Newton–Schulz compute dtype (``\"float32\"``, ``\"bfloat16\"``, …); ``None``: the device's fast dtype (bf16 on CUDA and on CPUs with fast bf16 GEMM, fp16 on older GPUs, fp32 otherwise; ``LIGHTNING_MUON_NS_DTYPE`` forces it).",
        _optional_choice(tuple(DTYPES)),
    ),
    "ns_form": H(
        "Newton–Schulz form: ``\"auto\"`` (direct; Gram for wide fp64), ``\"fast\"`` (Gram for wide fp32 too: "
        "37-44% fewer FLOPs on transformer MLP/QKV matrices, rounding error ~500·eps instead of ~10·eps), "
        "``\"direct\"`` or ``\"gram\"``.",
        _choice(NS_FORMS),
    ),
    "adamw_lr_ratio": H("AdamW branch lr as a multiple of the group lr.", _nonnegative),
    "adamw_betas": H("AdamW (β1, β2).", check_betas),
    "adamw_eps": H("AdamW epsilon.", check_positive),
    "adamw_weight_decay": H("AdamW branch decoupled weight decay.", _nonnegative),
    "max_bucket_numel": H(
        "most elements stacked into one batched call; one bucket is in flight at a time, so a step's "
        "temporary memory stays below ~7 fp32 copies of ``max(max_bucket_numel, largest matrix)``.",
        _integer(1, 1 << 62),
    ),
    "compile_elementwise": H(
        "``torch.compile`` the elementwise halves of the step: ``False``, ``True`` (inductor) or a backend "
        "name (a failure runs them eagerly, with one warning).",
        _backend,
    ),
    "nonfinite": H(
        "``\"raise\"`` on a non-finite gradient (nothing is changed) or ``\"skip\"`` the step.",
        _choice(("raise", "skip")),
    ),
    "structure": H(
        "which matrices are updated as row blocks: ``\"flatten\"`` (one matrix ``(out, in·k·…)``), "
        "``\"experts\"`` (``(E, m, n)``: E matrices), ``{\"split\": \"qkv\" | \"heads\", \"n_head\": H, "
        "\"n_query_groups\": G}`` (fused attention weights), ``{\"split\": \"rows\", \"sizes\": [...]}``, "
        "or a map of parameter-name patterns to these (:mod:`lightning_muon.optim.structure`).",
        check_structure,
    ),
    "vocab_size": H(
        "routing hint for plain tensors: matrices with a leading dim equal to it go to AdamW.",
        lambda name, value: value is None or check_int(name, value, 1, 1 << 40),
    ),
}
del H


def check_group(group: Mapping[str, Any], checks: Mapping[str, Check] | None = None) -> None:
    """Check every known hyperparameter of ``group`` (``checks`` overrides the table's)."""
    table = {k: h.check for k, h in HYPERPARAMETERS.items()}
    table.update(checks or {})
    for key, value in group.items():
        check = table.get(key)
        if check is not None:
            check(key, value)


def own_arguments(frame_locals: dict[str, Any]) -> dict[str, Any]:
    """An ``__init__``'s own hyperparameters from its ``locals()`` (without self, params, kwargs)."""
    return {
        k: v
        for k, v in frame_locals.items()
        if k not in ("self", "params", "kwargs", "__class__")
    }


_ARG_LINE = re.compile(r"^(\s*)(\w+):")


def _init_arguments(cls: type) -> list[str]:
    """Names ``cls(...)`` accepts, following ``**kwargs`` into the parents' ``__init__``."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in klass.__dict__:
            continue
        follows = False
        for n, p in inspect.signature(klass.__dict__["__init__"]).parameters.items():
            if p.kind is p.VAR_KEYWORD:
                follows = True
            elif n not in ("self", "defaults") and p.kind is not p.VAR_POSITIONAL and n not in names:
                names.append(n)
        if not follows:
            break
    return names


def merge_signature(cls: type) -> None:
    """Give ``cls.__init__`` the signature it really has: its own arguments, then (keyword-only)
    those its ``**kwargs`` pass on to the parents, so ``inspect.signature(cls)``, ``help()`` and
    the factories see every argument with its default."""
    init = cls.__dict__.get("__init__")
    if init is None:
        return
    own = inspect.signature(init)
    params = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
    if len(params) == len(own.parameters):
        return
    names = {p.name for p in params}
    for klass in cls.__mro__[1:]:
        parent = klass.__dict__.get("__init__")
        if parent is None:
            continue
        hints = typing.get_type_hints(parent)  # resolved here: the parent's module knows its names
        inherited = [
            p.replace(kind=p.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(parent).parameters.values()
            if p.name not in names and p.name not in ("self", "defaults")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        params += inherited
        names |= {p.name for p in inherited}
        if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(parent).parameters.values()):
            break
    init.__signature__ = own.replace(parameters=params)


def document(cls: type) -> None:
    """Rewrite the ``Args:`` section of ``cls.__doc__``: every ``__init__`` argument in signature order,
    each with the class's own text where it has one (its docstring, then ``cls.arg_docs``), else the
    shared text of :data:`HYPERPARAMETERS`."""
    doc = cls.__dict__.get("__doc__")
    lines = doc.split("\n") if doc else []
    header = next((i for i, line in enumerate(lines) if line.strip() == "Args:"), None)
    if header is None:
        return
    indent = lines[header][: len(lines[header]) - len(lines[header].lstrip())] + "    "
    own: dict[str, list[str]] = {}
    end = header + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(indent)):
        match = _ARG_LINE.match(lines[end])
        if match and match.group(1) == indent:
            own[match.group(2)] = [lines[end]]
        elif lines[end].strip() and own:
            own[list(own)[-1]].append(lines[end])
        end += 1
    docs = {k: h.doc for k, h in HYPERPARAMETERS.items()}
    docs.update(getattr(cls, "arg_docs", {}))
    names = _init_arguments(cls)
    entries = [own.pop(n, [f"{indent}{n}: {docs[n]}"]) for n in names if n in own or n in docs]
    entries += list(own.values())
    body = [line for entry in entries for line in entry]
    while end > header + 1 and not lines[end - 1].strip():
        end -= 1
    cls.__doc__ = "\n".join(lines[: header + 1] + body + lines[end:])


__all__ = [
    "HYPERPARAMETERS",
    "Hyperparameter",
    "OrthogonalizerSpec",
    "check_group",
    "document",
    "merge_signature",
    "own_arguments",
]
