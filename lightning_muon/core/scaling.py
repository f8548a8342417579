"""Learning-rate scale rules ``η_eff = η · s(m, n)`` for an ``m × n`` update (m = rows = fan-out).

| rule | ``s`` | RMS of ``s·O`` for orthogonal ``O`` |
|---|---|---|
| ``keller`` | ``sqrt(max(1, m/n))`` | ``1/sqrt(n)`` |
| ``moonlight`` | ``0.2·sqrt(max(m, n))`` | ``0.2`` |
| ``spectral`` | ``sqrt(m/n)`` | ``1/sqrt(n)`` (m ≥ n) |
| ``rms`` | ``0.2·sqrt(mn)/‖U‖_F`` (per step) | exactly ``0.2`` |
| ``none`` | ``1`` | — |

``0.2`` is the ``rms_target`` argument.

Example:
    >>> shape_scale(1024, 256, "keller")
    2.0
    >>> shape_scale(256, 1024, "moonlight", rms_target=0.2)
    6.4
"""

from __future__ import annotations

import math

SCALE_RULES = ("keller", "moonlight", "spectral", "rms", "none")


def shape_scale(m: int, n: int, rule: str, rms_target: float = 0.2) -> float:
    """The static factor of ``rule`` for an ``m × n`` matrix (``"rms"`` is dynamic: returns 1)."""
    if rule == "keller":
        return math.sqrt(max(1.0, m / n)) if n else 1.0
    if rule == "moonlight":
        return rms_target * math.sqrt(max(m, n))
    if rule == "spectral":
        return math.sqrt(m / n) if n else 1.0
    if rule in ("rms", "none"):
        return 1.0
    raise ValueError(f"Invalid scale: {rule!r}; expected one of {SCALE_RULES}")
