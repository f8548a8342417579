"""Hyperparameter checks that name the argument and the offending value.

Example:
    >>> check_range("momentum", 0.95, 0.0, 1.0)
    >>> check_range("momentum", 1.5, 0.0, 1.0)
    Traceback (most recent call last):
    ...
    ValueError: Invalid momentum: 1.5 (expected 0.0 <= momentum < 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_range(
    name: str, value: Any, low: float, high: float = math.inf, high_inclusive: bool = False
) -> None:
    """``low <= value < high`` (or ``<= high``), finite, and a real number."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: 2)() == 1:
        value = value.item()
    upper = "<=" if high_inclusive else "<"
    bound = f"{low} <= {name} {upper} {high}" if high != math.inf else f"{name} >= {low}"
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"Invalid {name}: {value!r} (expected a finite number, {bound})")
    too_high = value > high if high_inclusive else value >= high
    if value < low or too_high:
        raise ValueError(f"Invalid {name}: {value} (expected {bound})")


def check_positive(name: str, value: Any) -> None:
    """A finite number ``> 0``."""
    check_range(name, value, 0.0)
    if value <= 0:
        raise ValueError(f"Invalid {name}: {value} (expected {name} > 0)")


def check_int(name: str, value: Any, low: int, high: int) -> None:
    """An integer with ``low <= value <= high``."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(
            f"Invalid {name}: {value!r} (expected an integer, {low} <= {name} <= {high})"
        )


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(
            f"Invalid {name}: {value!r} (expected one of {', '.join(map(repr, choices))})"
        )


def check_bool(name: str, value: Any) -> None:
    """A real ``bool`` (not a truthy string)."""
    if not isinstance(value, bool):
        raise ValueError(f"Invalid {name}: {value!r} (expected True or False)")


def check_betas(name: str, value: Any) -> None:
    """A pair of numbers in ``[0, 1)``."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"Invalid {name}: {value!r} (expected a pair (beta1, beta2))")
    check_range(f"{name}[0]", value[0], 0.0, 1.0)
    check_range(f"{name}[1]", value[1], 0.0, 1.0)


__all__ = ["check_betas", "check_bool", "check_choice", "check_int", "check_positive", "check_range"]
