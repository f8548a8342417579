"""Saving, loading and copying a Muon-family optimizer without losing or scrambling anything.

:meth:`~torch.optim.Optimizer.state_dict` output gets one extra entry per param group,
``"state_record"``: the format version, the algorithm and class that made the state, and the shape
of every parameter of the group. :func:`load_state_dict` then checks, **before anything changes**:

* the source: state saved by another algorithm (``NorMuon`` state into ``Muon``, ``MuonNSR`` into
  ``MuonVS``) is refused, naming both classes. State saved before the record existed is attributed
  by its hyperparameter names, which differ between every two classes of the registry;
* every group value, through the same checks as the constructor (a missing ``momentum`` or
  ``lr="fast"`` is refused), and the routing (branch, parameter count, recorded shapes);
* every state entry: exactly the keys the algorithm keeps for that parameter and group
  (``momentum_buffer``, ``row_second_moment``, ``exp_avg``, …), each with exactly the shape it
  has when the optimizer creates it (a transposed buffer with the right element count is refused).

Loading never takes parameter names from the saved state (an optimizer built on plain tensors
saves ``param0``, ``param1``, …): names describe the loading optimizer's own parameters. A saved
``step`` that is a plain number becomes a tensor again, and state tensors keep their dtype (fp32
moments of bf16 weights); as in torch they are moved to the parameter's device, not copied.

:func:`getstate` makes ``copy.deepcopy`` and ``pickle`` keep the whole configuration
(``nonfinite``, ``skipped_steps``, ``routing``, ``distributed_options``, engine settings set on the
instance), dropping only caches that are rebuilt on demand.

Example:
    >>> import torch, torch.nn as nn
    >>> from lightning_muon import Muon, NorMuon
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    >>> saved = NorMuon(model).state_dict()
    >>> saved["param_groups"][0]["state_record"]["algorithm"]
    'normuon'
    >>> Muon(model).load_state_dict(saved)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Muon.load_state_dict: the state was saved by NorMuon (algorithm 'normuon'), ...
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from typing import Any

import torch
from torch.optim import Optimizer

from ..engine.blocks import fresh_state
from .structure import check_same_blocks, resolve

RECORD_KEY = "state_record"
FORMAT_VERSION = 1
#: Instance attributes that are caches or per-run bookkeeping: rebuilt on demand, never copied.
TRANSIENT_ATTRIBUTES = frozenset(
    {
        "_orthogonalizer_cache",
        "_compiled_hooks",
        "_distributed_engine",
        "_capture",
        "captured_directions",
        "_constructing",
        "_hooks",
        "_executor",
    }
)
_NOT_HYPERPARAMETERS = frozenset({"self", "params", "defaults", "nonfinite", "vocab_size"})
_GROUP_LABELS = frozenset({"params", "param_names", "branch", "name", RECORD_KEY})
_ADAMW_STATE = ("exp_avg", "exp_avg_sq")


def record(optimizer: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Add the ``"state_record"`` of each param group to ``state_dict`` (the output of ``state_dict()``)."""
    for saved, group in zip(state_dict["param_groups"], optimizer.param_groups, strict=True):
        saved[RECORD_KEY] = {
            "format": FORMAT_VERSION,
            "algorithm": type(optimizer).algorithm,
            "class": type(optimizer).__name__,
            "param_shapes": [logical_shape(optimizer, p) for p in group["params"]],
        }
    return state_dict


def hyperparameter_names(optimizer_class: type) -> frozenset[str]:
    """The group keys a Muon-family class keeps: its constructor's hyperparameters and the shell's."""
    names: set[str] = set()
    for cls in optimizer_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None or cls.__module__.startswith("torch."):
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                names.add(parameter.name)
    return frozenset(names - _NOT_HYPERPARAMETERS)


def family_classes(optimizer_class: type) -> list[type]:
    """Every loaded class of ``optimizer_class``'s family that names its own ``algorithm``.

    The family's root is the topmost class of the MRO defining ``algorithm``; the registry's six
    classes and any user subclass are found among its subclasses (no import needed).
    """
    root = next(c for c in reversed(optimizer_class.__mro__) if "algorithm" in c.__dict__)
    found, todo = [], [root]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls is not root and "algorithm" in cls.__dict__:
            found.append(cls)
    return found


def _switch_hint(loading: str, saved: str) -> str:
    return (
        f"Resume with the optimizer the state was saved with ({saved}), or start {loading} fresh: "
        "after switching --optimizer, do not pass ckpt_path; load the weights only "
        "(LightningModule.load_from_checkpoint, or model.load_state_dict(torch.load(path)['state_dict']))."
    )


def _check_source(optimizer: Any, saved: dict[str, Any], index: int, label: str) -> None:
    """Refuse state saved by another algorithm (recorded, or inferred from the group's keys)."""
    mine = type(optimizer)
    if "branch" not in saved or "adamw_lr_ratio" not in saved:
        raise ValueError(
            f"{label}: param group {index} was not saved by a Muon-family optimizer (it has no "
            f"'branch' / 'adamw_lr_ratio' entry; keys {sorted(k for k in saved if k != 'params')})"
        )
    entry = saved.get(RECORD_KEY)
    if entry is not None:
        if not isinstance(entry, dict) or not isinstance(entry.get("format"), int):
            raise ValueError(
                f"{label}: param group {index} has a malformed {RECORD_KEY!r}: {entry!r}"
            )
        if entry["format"] > FORMAT_VERSION:
            raise ValueError(
                f"{label}: the state has format {entry['format']}, written by a newer lightning_muon "
                f"(this one reads up to format {FORMAT_VERSION}); upgrade lightning_muon"
            )
        if entry.get("algorithm") != mine.algorithm:
            source = entry.get("class") or entry.get("algorithm")
            raise ValueError(
                f"{label}: the state was saved by {source} (algorithm {entry.get('algorithm')!r}), "
                f"not {mine.__name__} (algorithm {mine.algorithm!r}); its hyperparameters and moments "
                f"mean something else here. " + _switch_hint(mine.__name__, str(source))
            )
        return
    # Older state (no record): attribute it by the hyperparameter names it carries.
    names = {cls: hyperparameter_names(cls) for cls in family_classes(mine)}
    names[mine] = frozenset(k for k in optimizer.defaults if k != "differentiable")
    known = frozenset().union(*names.values())
    observed = frozenset(saved) & known
    sources = [cls for cls, keys in names.items() if keys == observed]
    if sources and mine not in sources:
        source = sources[0].__name__
        raise ValueError(
            f"{label}: the state was saved by {source} (inferred from the hyperparameters in which "
            f"the two differ: {sorted(observed ^ names[mine])}), not {mine.__name__}. "
            + _switch_hint(mine.__name__, source)
        )
    if not sources and observed - names[mine]:
        raise ValueError(
            f"{label}: param group {index} has hyperparameters {sorted(observed - names[mine])} that "
            f"{mine.__name__} does not have: it was saved by another optimizer. "
            + _switch_hint(mine.__name__, "the other class")
        )


def _check_group(
    optimizer: Any, saved: dict[str, Any], group: dict[str, Any], index: int, label: str
) -> dict[str, Any]:
    """The loaded group's hyperparameters, checked as the constructor checks them."""
    where = f"param group {index} of the loaded state"
    if saved["branch"] != group["branch"]:
        raise ValueError(
            f"{label}: {where} is on branch {saved['branch']!r}, this optimizer's group {index} on "
            f"{group['branch']!r}: the state was saved with a different routing"
        )
    if len(saved["params"]) != len(group["params"]):
        raise ValueError(
            f"{label}: {where} has {len(saved['params'])} parameters, this optimizer's group has "
            f"{len(group['params'])}"
        )
    required = frozenset(k for k in optimizer.defaults if k != "differentiable")
    missing = sorted(required - set(saved))
    if missing:
        raise ValueError(f"{label}: {where} has no {', '.join(map(repr, missing))}")
    shapes = (saved.get(RECORD_KEY) or {}).get("param_shapes")
    if shapes is not None:
        for i, (shape, p) in enumerate(zip(shapes, group["params"], strict=True)):
            if tuple(shape) != logical_shape(optimizer, p):
                raise ValueError(
                    f"{label}: {where} was saved for a parameter of shape {tuple(shape)} where this "
                    f"optimizer has {optimizer._name_of(p)} of shape {logical_shape(optimizer, p)} (position {i})"
                )
    hyper = {k: v for k, v in saved.items() if k not in _GROUP_LABELS}
    candidate = {**hyper, "branch": group["branch"]}
    try:
        optimizer._validate_group(candidate, f" ({where})")
    except (KeyError, TypeError) as err:
        raise ValueError(f"{label}: {where} is invalid: {err!r}") from None
    except ValueError as err:
        raise ValueError(f"{label}: {err}") from None
    candidate.pop("branch")
    if group["branch"] == "muon":
        named = [(optimizer._name_of(p), logical_shape(optimizer, p)) for p in group["params"]]
        try:
            check_same_blocks(candidate.get("structure"), group.get("structure"), named)
        except ValueError as err:
            raise ValueError(f"{label}: {where}: {err}") from None
    return candidate


def logical_shape(optimizer: Any, p: torch.Tensor) -> tuple[int, ...]:
    """The shape a parameter has in the model: its own, or under FSDP1 its original shape (the
    tensor itself is this rank's 1-D slice, which changes with the world size)."""
    flat = optimizer.__dict__.get("_flat_slices")
    return tuple(flat[id(p)].shape) if flat and id(p) in flat else tuple(p.shape)


def expected_state(
    optimizer: Any, p: torch.Tensor, group: dict[str, Any]
) -> dict[str, tuple[int, ...]]:
    """Key → shape of the state the optimizer creates for ``p`` under ``group``'s hyperparameters."""
    shapes: dict[str, tuple[int, ...]] = {"step": ()}
    if group["branch"] == "adamw":
        shapes.update({k: tuple(p.shape) for k in _ADAMW_STATE})
        return shapes
    meta = torch.empty(tuple(p.shape), dtype=p.dtype, device="meta")
    blocking = resolve(group.get("structure"), optimizer._name_of(p), logical_shape(optimizer, p))
    fresh = fresh_state(optimizer.matrix_step(group), meta, blocking)  # "step": (B,) for B blocks
    flat = optimizer.__dict__.get("_flat_slices")
    if flat and id(p) in flat:  # FSDP1 keeps all state slice-shaped (row statistics expanded)
        shapes.update({k: tuple(p.shape) for k in fresh if k != "step"})
    else:
        shapes.update({k: tuple(v.shape) for k, v in fresh.items()})
    return shapes


def _check_entry(
    optimizer: Any, p: torch.Tensor, entry: Any, group: dict[str, Any], label: str
) -> None:
    name = optimizer._name_of(p)
    if not isinstance(entry, dict):
        raise ValueError(f"{label}: the state of {name} is a {type(entry).__name__}, not a dict")
    if not entry:
        return  # never stepped
    expected = expected_state(optimizer, p, group)
    missing = sorted(set(expected) - set(entry))
    extra = sorted(set(entry) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{label}: the state of {name} has keys {sorted(entry)}, {type(optimizer).__name__} keeps "
            f"{sorted(expected)} for it (missing {missing}, unexpected {extra})"
        )
    for key, shape in expected.items():
        value = entry[key]
        if key == "step":
            count = (
                value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
            )
            if isinstance(count, bool) or not isinstance(count, int | float):
                if not isinstance(value, torch.Tensor):
                    raise ValueError(f"{label}: 'step' of {name} is {value!r}, not a step count")
            elif not math.isfinite(count) or count < 0:
                raise ValueError(f"{label}: 'step' of {name} is {value!r}, not a step count")
            if not isinstance(value, torch.Tensor):
                continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ValueError(
                f"{label}: state {key!r} of {name} is {type(value).__name__}"
                f"{'' if not isinstance(value, torch.Tensor) else ' of dtype ' + str(value.dtype)}, "
                "expected a floating-point tensor"
            )
        if tuple(value.shape) != shape:
            raise ValueError(
                f"{label}: state {key!r} of {name} has shape {tuple(value.shape)}; for the parameter's "
                f"shape {tuple(p.shape)} it must be {shape}"
            )


def _restored(p: torch.Tensor, key: str, value: Any) -> Any:
    """A checked state value on ``p``'s device, in its saved dtype (``step``: an fp32 tensor).

    As in torch, a tensor already on that device is used as given (packed storages stay packed):
    deep-copy a state dict taken from a live optimizer to keep the two independent.
    """
    if key == "step":
        if isinstance(value, torch.Tensor):
            return value.detach().to(device=p.device, dtype=torch.float32)
        return torch.tensor(float(value), dtype=torch.float32, device=p.device)
    return value.detach().to(device=p.device)


def load_state_dict(
    optimizer: Any, state_dict: dict[str, Any], backfill: dict[str, Any] | None = None
) -> None:
    """:meth:`torch.optim.Optimizer.load_state_dict` that checks everything first (see the module).

    ``backfill``: group keys added after a release, with the value older state gets.
    """
    label = f"{type(optimizer).__name__}.load_state_dict"
    state_dict = dict(state_dict)
    for hook in optimizer._optimizer_load_state_dict_pre_hooks.values():
        result = hook(optimizer, state_dict)
        if result is not None:
            state_dict = result
    if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
        raise ValueError(f"{label}: expected a dict with 'state' and 'param_groups'")
    saved_groups = [{**(backfill or {}), **group} for group in state_dict["param_groups"]]
    if len(saved_groups) != len(optimizer.param_groups):
        raise ValueError(
            f"{label}: the state has {len(saved_groups)} param groups, this optimizer has "
            f"{len(optimizer.param_groups)}"
        )
    for i, saved in enumerate(saved_groups):
        _check_source(optimizer, saved, i, label)
    loaded_groups = [
        _check_group(optimizer, saved, group, i, label)
        for i, (saved, group) in enumerate(zip(saved_groups, optimizer.param_groups, strict=True))
    ]
    id_map: dict[Any, tuple[torch.Tensor, dict[str, Any]]] = {}
    for saved, group, loaded in zip(
        saved_groups, optimizer.param_groups, loaded_groups, strict=True
    ):
        for pid, p in zip(saved["params"], group["params"], strict=True):
            id_map[pid] = (p, {**loaded, "branch": group["branch"]})
    saved_state = state_dict["state"]
    for pid, entry in saved_state.items():
        if pid not in id_map:
            raise ValueError(
                f"{label}: the state has an entry for parameter {pid!r}, which no param group lists"
            )
        p, group = id_map[pid]
        _check_entry(optimizer, p, entry, group, label)
    # Everything is checked: build the new state and groups, then swap them in at once.
    state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)
    for pid, entry in saved_state.items():
        p = id_map[pid][0]
        state[p] = {k: _restored(p, k, v) for k, v in entry.items()}
    param_groups = []
    for saved, group, loaded in zip(
        saved_groups, optimizer.param_groups, loaded_groups, strict=True
    ):
        new = {**loaded, "params": group["params"], "branch": group["branch"]}
        new["name"] = saved.get("name", group.get("name"))
        if "param_names" in group:
            new["param_names"] = group["param_names"]
        elif "param_names" in saved:
            new["param_names"] = list(saved["param_names"])
        param_groups.append(new)
    optimizer.__setstate__({"state": state, "param_groups": param_groups})
    for hook in optimizer._optimizer_load_state_dict_post_hooks.values():
        hook(optimizer)


def steps_as_tensors(optimizer: Any) -> None:
    """Turn plain-number ``step`` entries (older pickles) into fp32 tensors, as torch's optimizers do."""
    for p, entry in optimizer.state.items():
        if (
            isinstance(entry, dict)
            and "step" in entry
            and not isinstance(entry["step"], torch.Tensor)
        ):
            entry["step"] = torch.tensor(float(entry["step"]), dtype=torch.float32, device=p.device)


_TORCH_ATTRIBUTES: frozenset[str] | None = None


def _torch_attributes() -> frozenset[str]:
    """Attributes a plain torch optimizer keeps (hooks, profiling names): torch decides what to copy."""
    global _TORCH_ATTRIBUTES
    if _TORCH_ATTRIBUTES is None:
        plain = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        _TORCH_ATTRIBUTES = frozenset(vars(plain))
    return _TORCH_ATTRIBUTES


def getstate(optimizer: Any) -> dict[str, Any]:
    """What ``copy.deepcopy`` and ``pickle`` keep: torch's state plus the whole configuration."""
    state = Optimizer.__getstate__(optimizer)
    skip = _torch_attributes() | TRANSIENT_ATTRIBUTES
    for key, value in vars(optimizer).items():
        if key not in state and key not in skip:
            state[key] = value
    return state
