"""Three buckets in flight: the gather of bucket ``k+1`` overlaps the orthogonalization of ``k``,
and the scatter of ``k`` the following ones (the schedule both distributed executors use).

Example:
    >>> order = []
    >>> pipelined([1, 2, 3], lambda b: order.append(f"begin{b}") or b,
    ...           lambda j: order.append(f"ns{j}"), lambda j: order.append(f"finish{j}"))
    >>> order  # doctest: +NORMALIZE_WHITESPACE
    ['begin1', 'begin2', 'ns1', 'begin3', 'ns2', 'finish1', 'ns3', 'finish2', 'finish3']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def pipelined(
    buckets: Sequence[Any],
    begin: Callable[[Any], Any],
    orthogonalize: Callable[[Any], None],
    finish: Callable[[Any], None],
) -> None:
    """Run ``begin`` → ``orthogonalize`` → ``finish`` over ``buckets`` with three in flight."""
    if not buckets:
        return
    current, previous = begin(buckets[0]), None
    for k in range(len(buckets)):
        following = begin(buckets[k + 1]) if k + 1 < len(buckets) else None
        orthogonalize(current)
        if previous is not None:
            finish(previous)
        previous, current = current, following
    finish(previous)
