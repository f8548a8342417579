"""The ``structure`` group key: which matrix parameters are updated as several matrices.

By default (``"flatten"``) a parameter of shape ``(out, d1, d2, …)`` is one matrix
``(out, d1·d2·…)``: a convolution kernel, but also an ``(E, m, n)`` expert stack (one
``E × m·n`` matrix) and a fused QKV weight (one matrix for the three projections). A structure
cuts such a parameter into row blocks, each orthogonalized as a matrix of its own, with its own
shape scale ``s(m_b, n)``, RMS alignment and row statistics (:class:`~lightning_muon.engine.blocks.Blocking`):

* ``"flatten"``: one matrix (the default; it is the update the optimizer has always made, and
  whether the block updates train better is a question of the model: no measurement here says
  one is better, so nothing changes unless asked);
* ``"experts"``: an ``(E, m, n, …)`` stack is ``E`` matrices ``(m, n·…)``;
* ``{"split": "qkv", "n_head": H, "n_query_groups": G}``: a fused ``[q | k | v]`` weight of
  ``(H + 2G)·h_s`` rows is three matrices, ``(H·h_s, n)``, ``(G·h_s, n)``, ``(G·h_s, n)``
  (``G < H``: grouped-query attention; ``head_size`` may be given too and is then checked);
* ``{"split": "heads", "n_head": H, "n_query_groups": G}``: the same weight as ``H + 2G``
  matrices ``(h_s, n)``, one per query, key and value head;
* ``{"split": "rows", "sizes": [r_1, r_2, …]}``: any row split of the matrix ``(out, d1·…)``.

The group value is one of these for every matrix of the group, or a map from ``fnmatch``
patterns on parameter names to them (the first matching pattern wins; a parameter matching
none is ``"flatten"``): ``structure={"*.attn.qkv.weight": {"split": "heads", ...},
"*.experts.w*": "experts"}``. A mapping with a ``"split"`` key is one structure, any other
mapping a pattern map. :func:`lightning_muon.litgpt.attention_structure` builds the map of a
litgpt model. A structure that does not fit a parameter is refused at construction, naming both.

Example:
    >>> resolve({"split": "qkv", "n_head": 4, "n_query_groups": 2}, "attn.qkv.weight", (64, 32))
    Blocking(rows=(32, 16, 16), columns=32, row_dims=1)
    >>> resolve("experts", "moe.w1", (4, 8, 16)).rows
    (8, 8, 8, 8)
    >>> resolve({"split": "heads", "n_head": 3}, "qkv", (10, 4))
    Traceback (most recent call last):
    ...
    ValueError: structure {'split': 'heads', 'n_head': 3} does not fit qkv of shape (10, 4): 10 rows are not n_head + 2·n_query_groups = 9 heads of equal size
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

import torch

from ..engine.blocks import Blocking
from ..engine.tensors import matrix_shape

#: What ``structure=`` accepts: a name, a mapping with ``"split"``, or a map of name patterns to these.
StructureSpec = dict[str, Any] | str
#: The names a structure may have (strings or the ``"split"`` of a mapping).
STRUCTURES = ("flatten", "experts", "qkv", "heads", "rows")
_ATTENTION_KEYS = {"split", "n_head", "n_query_groups", "head_size"}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_spec(spec: Any) -> None:
    """Raise ``ValueError`` unless ``spec`` is one structure (not a pattern map)."""
    if isinstance(spec, str):
        if spec in ("flatten", "experts"):
            return
        if spec in ("qkv", "heads"):
            raise ValueError(
                f"Invalid structure: {spec!r} needs the attention geometry: "
                f"{{'split': {spec!r}, 'n_head': H, 'n_query_groups': G}} "
                "(lightning_muon.litgpt.attention_structure builds it for a litgpt model)"
            )
        raise ValueError(f"Invalid structure: {spec!r} (expected one of {', '.join(STRUCTURES)})")
    if not isinstance(spec, Mapping) or spec.get("split") not in STRUCTURES:
        raise ValueError(
            f"Invalid structure: {spec!r} (expected 'flatten', 'experts' or a mapping with 'split' "
            f"one of {', '.join(STRUCTURES)})"
        )
    split = spec["split"]
    if split in ("flatten", "experts"):
        if set(spec) != {"split"}:
            raise ValueError(f"Invalid structure: {spec!r} ({split!r} takes no arguments)")
    elif split == "rows":
        sizes = spec.get("sizes")
        if (
            set(spec) != {"split", "sizes"}
            or not isinstance(sizes, list | tuple)
            or not sizes
            or not all(_positive_int(s) for s in sizes)
        ):
            raise ValueError(
                f"Invalid structure: {spec!r} (expected {{'split': 'rows', 'sizes': [positive ints]}})"
            )
    else:
        unknown = set(spec) - _ATTENTION_KEYS
        heads, groups = spec.get("n_head"), spec.get("n_query_groups", spec.get("n_head"))
        if unknown or not _positive_int(heads) or not _positive_int(groups):
            raise ValueError(
                f"Invalid structure: {spec!r} (expected {{'split': {split!r}, 'n_head': int >= 1, "
                "'n_query_groups': int >= 1, optional 'head_size': int >= 1}"
                + (f"; unknown keys {sorted(unknown)}" if unknown else "")
                + ")"
            )
        if heads % groups:
            raise ValueError(
                f"Invalid structure: {spec!r} (n_head={heads} is not a multiple of n_query_groups={groups})"
            )
        if "head_size" in spec and not _positive_int(spec["head_size"]):
            raise ValueError(f"Invalid structure: {spec!r} (head_size must be an int >= 1)")


def check_structure(name: str, value: Any) -> None:
    """The group check of ``structure``: one structure, or a map of name patterns to structures."""
    if isinstance(value, Mapping) and "split" not in value:
        for pattern, spec in value.items():
            if not isinstance(pattern, str):
                raise ValueError(f"Invalid {name}: pattern {pattern!r} is not a string")
            _check_spec(spec)
        return
    _check_spec(value)


def spec_for(value: Any, param_name: str) -> Any:
    """The structure ``value`` gives the parameter called ``param_name``."""
    if isinstance(value, Mapping) and "split" not in value:
        for pattern, spec in value.items():
            if fnmatchcase(param_name, pattern):
                return spec
        return "flatten"
    return value


def resolve(value: Any, param_name: str, shape: tuple[int, ...]) -> Blocking | None:
    """The :class:`Blocking` of a parameter (``None``: one matrix), or ``ValueError`` naming the
    parameter, its shape and the structure when the structure does not fit it."""
    spec = spec_for("flatten" if value is None else value, param_name)
    _check_spec(spec)
    split = spec if isinstance(spec, str) else spec["split"]
    shape = tuple(shape)

    def refuse(reason: str) -> ValueError:
        return ValueError(
            f"structure {spec!r} does not fit {param_name} of shape {shape}: {reason}"
        )

    if split == "flatten":
        return None
    if split == "experts":
        if len(shape) < 3:
            raise refuse("'experts' needs a stack (E, m, n, ...) of at least 3 dimensions")
        return Blocking((shape[1],) * shape[0], math.prod(shape[2:]), row_dims=2)
    rows, columns = matrix_shape(shape)
    if split == "rows":
        sizes = tuple(spec["sizes"])
        if sum(sizes) != rows:
            raise refuse(f"the sizes {list(sizes)} add up to {sum(sizes)} rows, not {rows}")
        return Blocking(sizes, columns)
    if len(shape) != 2:
        raise refuse(f"{split!r} splits a 2-D weight")
    heads = spec["n_head"]
    groups = spec.get("n_query_groups", heads)
    count = heads + 2 * groups
    if rows % count:
        raise refuse(f"{rows} rows are not n_head + 2·n_query_groups = {count} heads of equal size")
    head_size = rows // count
    if spec.get("head_size", head_size) != head_size:
        raise refuse(f"{rows} rows are not {count} heads of head_size {spec['head_size']}")
    if split == "heads":
        return Blocking((head_size,) * count, columns)
    return Blocking((heads * head_size, groups * head_size, groups * head_size), columns)


def group_blockings(group: Mapping[str, Any]) -> dict[torch.Tensor, Blocking]:
    """The parameters of a matrix group that its ``structure`` cuts into blocks, with their blocks."""
    value = group.get("structure", "flatten")
    if value == "flatten" or group.get("branch") != "muon":
        return {}
    names = group.get("param_names") or []
    out = {}
    for i, p in enumerate(group["params"]):
        name = names[i] if i < len(names) else f"<parameter of shape {tuple(p.shape)}>"
        blocking = resolve(value, name, tuple(p.shape))
        if blocking is not None:
            out[p] = blocking
    return out


def check_same_blocks(saved: Any, current: Any, named: list[tuple[str, tuple[int, ...]]]) -> None:
    """Refuse a loaded group whose structure ``saved`` cuts a parameter of ``named`` (names and
    shapes) into other blocks than ``current`` does: its per-block state would be misread."""
    for name, shape in named:
        if resolve(saved, name, shape) != resolve(current, name, shape):
            theirs, ours = (spec_for(v or "flatten", name) for v in (saved, current))
            raise ValueError(
                f"it updates {name} with structure {theirs!r}, this optimizer with {ours!r}: the "
                "state (moments, row statistics, per-block steps) is laid out for the saved blocks "
                "and would be misread. Build the optimizer with the saved structure to resume, or "
                "start its state fresh"
            )


def warn_unmatched_patterns(label: str, groups: list[Mapping[str, Any]]) -> None:
    """Warn about ``structure`` patterns that match no matrix of the groups that carry them (a typo,
    or parameters without names: plain tensors are called ``param0``, ``param1``, …)."""
    unmatched: set[str] = set()
    for group in groups:
        value = group.get("structure")
        if group.get("branch") == "muon" and isinstance(value, Mapping) and "split" not in value:
            names = group.get("param_names") or []
            unmatched |= {pat for pat in value if not any(fnmatchcase(n, pat) for n in names)}
    if unmatched:
        warnings.warn(
            f"{label}: structure patterns {sorted(unmatched)} match no parameter of the orthogonal "
            "branch (pass the model or named_parameters() so that parameters have their names)",
            UserWarning,
            stacklevel=4,
        )
