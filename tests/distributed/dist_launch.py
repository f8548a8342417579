"""Start a test job in several gloo processes (torchrun-style environment) and collect what it wrote."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def end_process_group() -> None:
    """Let every rank reach the end, then close the process group (inside a job, after its work).

    Lightning never destroys the group it creates; left to interpreter shutdown, gloo's threads can
    abort the process (``terminate called without an active exception``) after the job succeeded.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def error_text(fn: Any) -> str:
    """``"Type: message"`` of what ``fn()`` raises, or ``"no error"`` (a job records it; the test checks it)."""
    try:
        fn()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return "no error"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        {"OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"}
    )
    env.update(extra)
    return env


def run_job(
    script: Path, out: Path, world: int | None = 2, args: tuple[str, ...] = (), timeout: float = 300
) -> list[dict[str, Any]]:
    """Run ``script out *args`` on ``world`` ranks (or once, ``world=None``, for launchers that spawn
    their own ranks, like Lightning's) and return each rank's ``out/rank{r}.json``.

    Raises ``AssertionError`` with the processes' output when a rank fails or the job times out.
    """
    out.mkdir(parents=True, exist_ok=True)
    port = str(free_port())
    ranks = range(world) if world else [None]
    procs, logs = [], []
    for r in ranks:
        extra = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        if r is not None:
            extra.update({"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world)})
        log = open(out / f"log{r or 0}.txt", "w")  # noqa: SIM115 - closed below
        logs.append(log)
        cmd = [sys.executable, str(script), str(out), *args]
        procs.append(
            subprocess.Popen(cmd, env=_env(extra), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        )
    deadline = time.monotonic() + timeout
    failed = False
    while any(p.poll() is None for p in procs):
        if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
            failed = True
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.1)
    for log in logs:
        log.close()
    if failed or any(p.wait() != 0 for p in procs):
        text = "\n".join(
            f"--- log{i}\n{(out / f'log{i}.txt').read_text()[-6000:]}" for i in range(len(procs))
        )
        codes = [p.poll() for p in procs]
        raise AssertionError(
            f"{script.name} failed (exit codes {codes}) or timed out after {timeout}s:\n{text}"
        )
    results = sorted(out.glob("rank*.json"))
    return [json.loads(p.read_text()) for p in results]
