"""Run a benchmark's worker on ``world`` spawned processes and collect what rank 0 wrote.

Example (a worker that opens the gloo group at ``port`` and writes JSON to ``out`` on rank 0)::

    result = spawn_ranks(_worker, world=4, extra=(args,))  # _worker(rank, world, args, port, out)
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(worker: Callable[..., None], world: int, extra: tuple = ()) -> Any:
    """``worker(rank, world, *extra, port, out)`` on ``world`` processes; returns the JSON at ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        mp.spawn(worker, args=(world, *extra, free_port(), out), nprocs=world, join=True)
        with open(out, encoding="utf-8") as f:
            return json.load(f)
