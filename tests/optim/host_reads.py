"""Count device-to-host reads: every way Python code turns a tensor into a host value.

On CUDA each of these blocks until the device catches up (a sync); counting them on CPU finds the
same places. ``torch.Tensor``'s conversions are patched for the duration of the ``with`` block.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import torch

CONVERSIONS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def count_host_reads():
    """Yields a ``Counter`` of conversions by name, filled while the block runs."""
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in CONVERSIONS}

    def wrap(name, original):
        def counted(self, *args, **kwargs):
            counts[name] += 1
            return original(self, *args, **kwargs)

        return counted

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
