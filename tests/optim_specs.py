"""pytest parametrizations over the optimizer registry (``lightning_muon.optim.registry.SPECS``).

Every generic test takes its optimizers from here, so a new registry entry (or a new variant of
one) is tested everywhere without editing a test.
"""

from __future__ import annotations

import pytest

from lightning_muon.optim.registry import SPECS, available_names

MUON_FAMILY = [SPECS[name] for name in available_names("muon")]

#: Variants whose parity with the reference tier waits on a change to the optimizer classes.
PENDING: dict[tuple[str, str], str] = {}


def spec_params(family: str | None = "muon") -> list:
    """One ``pytest.param(spec)`` per registry entry of ``family`` (``None``: all)."""
    return [pytest.param(SPECS[name], id=name) for name in available_names(family)]


def variant_params(family: str | None = "muon", heavy: bool = False, pending: bool = False) -> list:
    """One ``pytest.param(spec, variant)`` per constructor variant of every entry of ``family``.

    ``heavy``: only each entry's default variant runs in the fast lane, the others are marked
    ``slow``. ``pending``: variants listed in :data:`PENDING` are strict ``xfail``.
    """
    params = []
    for name in available_names(family):
        spec = SPECS[name]
        for i, variant in enumerate(spec.variants):
            marks = []
            if heavy and i:
                marks.append(pytest.mark.slow)
            reason = PENDING.get((name, variant.label))
            if pending and reason:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            params.append(pytest.param(spec, variant, id=f"{name}-{variant.label}", marks=marks))
    return params


def error_params(family: str | None = None) -> list:
    """One ``pytest.param(spec, case)`` per error input of every entry of ``family``."""
    return [
        pytest.param(SPECS[name], case, id=f"{name}-{case.argument}-{i}")
        for name in available_names(family)
        for i, case in enumerate(SPECS[name].invalid)
    ]


def invalid_args(name: str) -> list[tuple[dict, str]]:
    """``(kwargs, argument)`` of every error input of the registry entry ``name``."""
    return [(dict(case.kwargs), case.argument) for case in SPECS[name].invalid]
