"""Memory accounting of an optimizer step: peak temporary bytes and optimizer-state bytes.

*Peak temporary memory* is the largest amount of memory allocated during the call and not yet
freed, above what was allocated when it started. On CUDA it comes from the caching allocator's
counters (``torch.cuda.max_memory_allocated``). On CPU there are no such counters, and RSS or
``tracemalloc`` do not see (or blur) torch's allocations, so it is read from
``torch.profiler``'s memory events: every allocation and free of the CPU allocator is recorded
with its signed size, and the running sum over the call, in time order, peaks at the answer.
Memory allocated once and kept (new optimizer state on a first step) counts too, so measure a step
after warm-up.

Example:
    >>> import torch
    >>> def make_two():
    ...     a = torch.empty(1 << 20)          # 4 MiB
    ...     b = torch.empty(1 << 20)          # 4 MiB, both alive
    ...     del a, b
    >>> peak_temporary_bytes(make_two, torch.device("cpu")) >= 8 << 20
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch


def _walk(nodes: Iterable[Any]) -> Iterator[Any]:
    for node in nodes:
        yield node
        yield from _walk(node.children)


def _cpu_peak(fn: Callable[[], Any]) -> int:
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    for node in _walk(prof.profiler.kineto_results.experimental_event_tree()):
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
    events.sort()
    live = peak = 0
    for _, size in events:
        live += size
        peak = max(peak, live)
    return peak


def peak_temporary_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Bytes allocated by ``fn`` at its peak, above the allocation level when it started."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    return _cpu_peak(fn)


def state_bytes(state: Any, params: Iterable[torch.Tensor]) -> int:
    """Bytes of every tensor in an optimizer's ``state`` for ``params`` (shared storages counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for p in params:
        for value in state.get(p, {}).values():
            if isinstance(value, torch.Tensor):
                local = value.to_local() if hasattr(value, "to_local") else value
                key = (local.untyped_storage().data_ptr(), local.storage_offset())
                if key in seen:
                    continue
                seen.add(key)
                total += local.numel() * local.element_size()
    return total
