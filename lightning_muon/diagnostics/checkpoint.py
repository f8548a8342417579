"""A diagnostic monitor's history in a checkpoint: its state format, and loading it back in one call.

``UpdateNormMonitor`` and ``SpectrumMonitor`` save their history in the Lightning checkpoint under
``checkpoint["callbacks"][monitor.state_key]`` as plain data (tensors, numbers, strings)::

    {"version": 1, "kind": "update_norm" | "spectrum", "config": {...}, "records": [...]}

:func:`load_history` reads it back from a ``.ckpt`` file or from a run folder (the newest
``last.ckpt``, else the newest ``*.ckpt`` below it), so a finished command-line run can be drawn
without rebuilding the Trainer::

    records = load_history("runs/quickstart/lightning_logs/version_0/checkpoints/last.ckpt")
    plot_spectra(records); plot_row_norms(records)

Example:
    >>> import torch
    >>> from lightning_muon.diagnostics.history import UpdateNormRecord
    >>> rec = UpdateNormRecord.from_tensors(9, "fc.weight", (2, 2), torch.ones(2), torch.ones(2))
    >>> state = history_state("update_norm", {"every_n_steps": 10}, [rec])
    >>> records_from_state(state) == [rec]
    True
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from lightning_muon.diagnostics.history import SpectrumRecord, UpdateNormRecord

__all__ = [
    "STATE_VERSION",
    "find_checkpoint",
    "history_state",
    "load_histories",
    "load_history",
    "records_from_state",
]

#: Version of the saved state. Version 1 (lightning_muon 0.1) counted a record's step as steps
#: completed; version 2 uses the step index of Lightning's loggers (one less). Version-1 states
#: are read and shifted; other versions are reported, not read.
STATE_VERSION = 2

_RECORD_TYPES: dict[str, type] = {"update_norm": UpdateNormRecord, "spectrum": SpectrumRecord}

Record = UpdateNormRecord | SpectrumRecord


def history_state(kind: str, config: dict[str, Any], records: Iterable[Record]) -> dict[str, Any]:
    """The checkpoint state of a monitor of ``kind`` (``"update_norm"`` or ``"spectrum"``)."""
    if kind not in _RECORD_TYPES:
        raise ValueError(f"kind must be one of {sorted(_RECORD_TYPES)}, got {kind!r}")
    return {
        "version": STATE_VERSION,
        "kind": kind,
        "config": dict(config),
        "records": [r.to_state() for r in records],
    }


def _kind_of(state: dict[str, Any]) -> str:
    kind = state.get("kind")
    if kind in _RECORD_TYPES:
        return kind
    records = state.get("records") or [{}]
    return "spectrum" if "singular_values" in records[0] else "update_norm"


def records_from_state(state: dict[str, Any]) -> list[Record]:
    """The records of a saved state; ``ValueError``/``KeyError``/``TypeError`` if malformed."""
    version = state["version"]
    if version not in (1, STATE_VERSION):
        raise ValueError(f"unsupported state version {version!r}")
    record_type = _RECORD_TYPES[_kind_of(state)]
    shift = 1 if version == 1 else 0
    return [record_type.from_state({**s, "step": s["step"] - shift}) for s in state["records"]]


def is_history_state(state: Any) -> bool:
    """Whether a ``checkpoint["callbacks"]`` entry looks like a monitor's history."""
    return isinstance(state, dict) and {"version", "records", "config"} <= state.keys()


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a file, else the newest ``last.ckpt`` (or ``*.ckpt``) below the folder."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint or run folder at {str(path)!r}")
    for pattern in ("last*.ckpt", "*.ckpt"):
        found = sorted(path.rglob(pattern), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    raise FileNotFoundError(f"no .ckpt file below {str(path)!r}")


def load_histories(
    path: str | os.PathLike[str], weights_only: bool = True
) -> dict[str, list[Record]]:
    """Every monitor's records in a checkpoint (or run folder), by the monitor's ``state_key``.

    Args:
        path: a ``.ckpt`` file or a folder (searched recursively, newest ``last.ckpt`` first).
        weights_only: ``torch.load``'s safe mode (tensors and plain data only). A checkpoint
            whose hyperparameters hold other objects needs ``False``: only for files you trust.

    Returns:
        ``{state_key: records}`` in the order the checkpoint lists the callbacks.

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: the checkpoint holds no monitor history (names the callbacks it holds).
    """
    ckpt_path = find_checkpoint(path)
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=weights_only)
    callbacks = checkpoint.get("callbacks", {}) if isinstance(checkpoint, dict) else {}
    out = {key: records_from_state(s) for key, s in callbacks.items() if is_history_state(s)}
    if not out:
        raise ValueError(
            f"{str(ckpt_path)!r} holds no UpdateNormMonitor/SpectrumMonitor history; its "
            f"callbacks: {sorted(callbacks) or 'none'}"
        )
    return out


def load_history(
    path: str | os.PathLike[str], monitor: str | None = None, weights_only: bool = True
) -> list[Record]:
    """The records of the monitors saved in a checkpoint or run folder, in one list.

    The plotting functions pick the records they draw (``plot_row_norms`` the update norms,
    ``plot_spectra`` the spectra), so the list can be passed to any of them, or to
    :func:`~lightning_muon.diagnostics.compare_runs` as one run.

    Args:
        path: a ``.ckpt`` file or a run folder (e.g. ``runs/quickstart``).
        monitor: keep only monitors whose ``state_key`` contains this text (e.g.
            ``"SpectrumMonitor"`` or a parameter pattern); default: all.
        weights_only: see :func:`load_histories`.

    Returns:
        The records, monitor after monitor.
    """
    histories = load_histories(path, weights_only)
    chosen = {k: v for k, v in histories.items() if monitor is None or monitor in k}
    if not chosen:
        raise ValueError(f"no monitor matching {monitor!r}; saved monitors: {list(histories)}")
    return [r for records in chosen.values() for r in records]
