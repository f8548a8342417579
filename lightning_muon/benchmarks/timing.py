"""Side-by-side timing: warm-up, interleaved rounds, medians and per-round ratios.

Every round runs each candidate once, in an order rotated from round to round, so slow drifts of
the machine (other processes, clock changes) hit all candidates alike. A ratio ``a/b`` is taken
*within* each round, ``t_a[r] / t_b[r]``, and summarised by its median and range, which is far
less sensitive to load than a ratio of separately measured times.

Example:
    >>> times = interleaved({"a": lambda: 1.0, "b": lambda: 2.0}, rounds=3)
    >>> times["b"]
    [2.0, 2.0, 2.0]
    >>> ratio_summary(times["b"], times["a"])["median"]
    2.0
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

#: Clocks a timed call can be measured with. ``"cpu"`` is the CPU time of this process: on a CPU
#: shared with other jobs it leaves out the time the process waited for a core, which is not a
#: cost of the code measured (with one thread it equals wall time on an idle machine).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn: Callable[[], Any], sync: Callable[[], None], clock: str = "wall") -> float:
    """Seconds one call of ``fn`` takes on ``clock`` (``sync`` waits for accelerators before and after)."""
    now = CLOCKS[clock]
    sync()
    start = now()
    fn()
    sync()
    return now() - start


def default_clock(device_type: str, threads: int) -> str:
    """``"cpu"`` for single-threaded CPU runs (robust to other processes), ``"wall"`` otherwise."""
    return "cpu" if device_type == "cpu" and threads == 1 else "wall"


def interleaved(
    runs: Mapping[str, Callable[[], float]],
    rounds: int,
    warmup: int = 0,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Time every candidate once per round, in rotated order; returns seconds per round.

    Args:
        runs: name → function that performs one timed unit and returns its seconds.
        rounds: number of measured rounds (each candidate runs once per round).
        warmup: unmeasured calls of every candidate before the first round.
        on_round: called with the round index after each round (progress reporting).
    """
    if rounds < 1:
        raise ValueError(f"Invalid rounds: {rounds} (expected >= 1)")
    if warmup < 0:
        raise ValueError(f"Invalid warmup: {warmup} (expected >= 0)")
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(runs[name]())
        if on_round is not None:
            on_round(r)
    return times


def ratio_summary(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Median, min and max of the per-round ratios ``numerator[r] / denominator[r]``."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
    }


def rate_summary(
    work: float, seconds: list[float], reference: list[float] | None = None
) -> dict[str, float]:
    """Median throughput ``work / t`` and, with per-round ``reference`` rates, the median fraction of them."""
    rates = [work / t for t in seconds]
    out = {"median": statistics.median(rates)}
    if reference is not None:
        out["fraction"] = statistics.median(
            [rate / ref for rate, ref in zip(rates, reference, strict=True)]
        )
    return out
