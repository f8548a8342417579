"""Optimizer-step speed and memory, measured side by side: ``python -m lightning_muon.benchmarks.step_speed``.

One process, a fixed number of threads, the same seeded parameters and gradients for every
candidate (:mod:`.candidates`), warm-up steps, then interleaved rounds (:mod:`.timing`) that also
time the machine probes (:mod:`.machine`: fp32 and bf16 matmul, memory copy), so every
throughput is reported as a fraction of what the machine did *in the same round*. After timing,
one more step of each candidate is profiled for its peak temporary memory (:mod:`.memory`), and
its optimizer state is counted in bytes per parameter.

Reported per shape set (:mod:`.shapes`): median step time; per-round ratios against the
baselines (``torch.optim.Muon``, the plain fp32 loop, our ``Muon``, fused AdamW); Newton–Schulz
GFLOP/s counted in direct-form FLOPs (comparable across implementations) and the executed FLOPs
as a fraction of the matmul rate (how close to the machine the code runs; our fp32 path executes
fewer FLOPs, :mod:`lightning_muon.core.orthogonalize`); bytes moved and fraction of the copy
bandwidth for AdamW;
peak temporary MiB; state bytes per parameter; and the targets of the performance issue with
their measured values. Output: JSON (``--json``) and a markdown report (``--markdown``, stdout).

Example:
    >>> result = run(["small"], ["muon", "reference_muon"], rounds=2, warmup=1, memory=False)
    >>> sorted(result["sets"]["small"]["candidates"])
    ['muon', 'reference_muon']
    >>> result["sets"]["small"]["ratios"][0]["pair"]
    'muon / reference_muon'
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..core.orthogonalize import default_ns_dtype
from ..engine.buckets import DEFAULT_MAX_BUCKET_NUMEL
from .candidates import Candidate, build_candidates, candidate_names
from .machine import copy_probe, machine_info, matmul_probe
from .memory import peak_temporary_bytes, state_bytes
from .report import command_line, markdown, write_outputs
from .shapes import SHAPE_SETS, ShapeSet
from .timing import CLOCKS, default_clock, interleaved, rate_summary, ratio_summary

#: (numerator, denominator, upper limit or None): per-round ratios of step times.
COMPARISONS: tuple[tuple[str, str, float | None], ...] = (
    ("muon", "reference_muon", 1.0),
    ("muon+fast", "reference_muon", 1.0),
    ("muon", "torch_muon", 0.85),
    ("muon+fast", "torch_muon", None),
    ("muon@bfloat16", "torch_muon", None),
    ("muon@float32", "torch_muon", None),
    ("muon@float32", "reference_muon", 1.0),
    ("normuon", "muon", 1.05),
    ("adamuon", "muon", 1.1),
    ("muon_nsr", "muon", 1.1),
    ("muon_vs", "muon", 1.1),
    ("spectral_muon", "muon", None),
    ("muon+fast", "muon", None),
    ("normuon+fast", "normuon", None),
    ("muon+compiled", "muon", None),
    ("normuon+compiled", "normuon", None),
    ("ns", "muon", None),
    ("muon", "adamw_fused", None),
    ("adamw_foreach", "adamw_fused", None),
    ("adamw_branch", "adamw_fused_aux", 1.2),
    ("adamw_branch_kernel", "adamw_fused_aux", 1.2),
)
#: Per-set limits that differ from :data:`COMPARISONS` (the small set's bf16 floor is lower).
SET_LIMITS: dict[str, dict[str, float]] = {"small": {"muon / torch_muon": 0.75}}
#: Peak temporary memory of a steady-state step, at most this many largest buckets (fp32 bytes).
MEMORY_TARGET = (("muon", "normuon", "adamuon"), 2.0)
#: (candidate, limit): optimizer-state bytes relative to ``adamw_fused`` on the same matrices.
STATE_TARGETS = (("muon", 0.55), ("normuon", 0.55), ("adamuon", 1.05))
#: Newton–Schulz throughput target (fraction of the matmul rate) and the set it applies to.
NS_TARGET = ("medium", 0.85)
#: Bytes an AdamW step moves per parameter element: reads p, g, m, v; writes p, m, v (fp32).
ADAMW_BYTES_PER_ELEMENT = 28


def _throughput(
    cand: Candidate, seconds: list[float], shape_set: ShapeSet, probes: dict[str, list[float]]
) -> dict[str, Any]:
    """Newton–Schulz rates (direct-form equivalent, and executed FLOPs as a fraction of the matmul
    probe of the candidate's dtype), or bytes/s as a fraction of the copy probe for AdamW."""
    if cand.kind == "orthogonal":
        probe = f"matmul_{str(cand.ns_dtype).removeprefix('torch.')}"
        flops = shape_set.ns_flops(steps=5)
        executed = shape_set.ns_flops_executed(5, cand.ns_dtype, cand.ns_form)
        s = rate_summary(executed, seconds, probes.get(probe))
        return {
            "ns_gflops": rate_summary(flops, seconds)["median"] / 1e9,
            "ns_gflops_executed": s["median"] / 1e9,
            "fraction_of": probe,
            "fraction": s.get("fraction"),
        }
    numel = shape_set.hidden_numel if cand.kind == "adamw" else shape_set.aux_numel
    s = rate_summary(ADAMW_BYTES_PER_ELEMENT * numel, seconds, probes.get("copy"))
    return {"gbytes_per_s": s["median"] / 1e9, "fraction_of": "copy", "fraction": s.get("fraction")}


def largest_bucket_bytes(
    shape_set: ShapeSet, max_bucket_numel: int = DEFAULT_MAX_BUCKET_NUMEL
) -> int:
    """fp32 bytes of the largest bucket the optimizers stack for ``shape_set``."""
    counts: dict[tuple[int, int], int] = {}
    for _, shape in shape_set.hidden:
        m = shape[0]
        n = 1
        for d in shape[1:]:
            n *= d
        counts[(m, n)] = counts.get((m, n), 0) + 1
    return max(
        4 * min(c, max(1, max_bucket_numel // (m * n))) * m * n for (m, n), c in counts.items()
    )


def _targets(
    set_name: str, cands: dict[str, Any], ratios: list[dict[str, Any]], bucket_bytes: int = 0
) -> list[dict]:
    out = []
    names, times = MEMORY_TARGET
    for name in names:
        peak = cands.get(name, {}).get("peak_temp_bytes")
        if peak is not None and bucket_bytes:
            out.append(
                {
                    "target": f"peak temp {name} / largest bucket <= {times}",
                    "measured": peak / bucket_bytes,
                    "met": peak <= times * bucket_bytes,
                }
            )
    for r in ratios:
        if r["limit"] is not None:
            out.append(
                {
                    "target": f"{r['pair']} <= {r['limit']}",
                    "measured": r["median"],
                    "met": r["median"] <= r["limit"],
                }
            )
    base = cands.get("adamw_fused", {}).get("state_bytes")
    for name, limit in STATE_TARGETS:
        if base and name in cands:
            ratio = cands[name]["state_bytes"] / base
            out.append(
                {
                    "target": f"state {name} / adamw <= {limit}",
                    "measured": ratio,
                    "met": ratio <= limit,
                }
            )
    if set_name == NS_TARGET[0] and cands.get("ns", {}).get("fraction") is not None:
        frac = cands["ns"]["fraction"]
        out.append(
            {
                "target": f"ns / matmul rate >= {NS_TARGET[1]}",
                "measured": frac,
                "met": frac >= NS_TARGET[1],
            }
        )
    return out


def run_set(
    shape_set: ShapeSet,
    names: Sequence[str],
    device: torch.device,
    rounds: int,
    warmup: int,
    seed: int = 0,
    memory: bool = True,
    log: Any = None,
    clock: str = "wall",
) -> dict[str, Any]:
    """Benchmark ``names`` on one shape set; returns the JSON-ready record of that set."""
    lineup = build_candidates(shape_set, names, device, seed, clock)
    probes = [
        matmul_probe(device, torch.float32, clock=clock),
        matmul_probe(device, torch.bfloat16, clock=clock),
        copy_probe(device, clock=clock),
    ]
    runs = {name: c.run for name, c in lineup.candidates.items()}
    runs.update({p.name: p.run for p in probes})
    checksum = lineup.gradient_checksum()

    def progress(r: int) -> None:
        if log is not None:
            print(f"  {shape_set.name}: round {r + 1}/{rounds}", file=log, flush=True)

    times = interleaved(runs, rounds, warmup, progress)
    if lineup.gradient_checksum() != checksum:
        raise RuntimeError("a candidate modified the shared gradients; the comparison is void")
    rates = {p.name: [p.work / t for t in times[p.name]] for p in probes}
    record: dict[str, Any] = {
        "description": shape_set.description,
        "hidden_matrices": len(shape_set.hidden),
        "hidden_numel": shape_set.hidden_numel,
        "aux_numel": shape_set.aux_numel,
        "ns_gflop_per_step": shape_set.ns_flops(5) / 1e9,
        "ns_gflop_per_step_fast_fp32": shape_set.ns_flops_executed(5, torch.float32, "fast") / 1e9,
        "probes": {
            p.name: {
                "median_rate": statistics.median(rates[p.name]),
                "unit": f"{p.unit}/s",
                "rates": rates[p.name],
            }
            for p in probes
        },
        "candidates": {},
    }
    for name, cand in lineup.candidates.items():
        entry: dict[str, Any] = {
            "kind": cand.kind,
            "median_s": statistics.median(times[name]),
            "times_s": times[name],
        }
        entry.update(_throughput(cand, times[name], shape_set, rates))
        if cand.optimizer is not None:
            numel = sum(p.numel() for p in cand.params)
            entry["state_bytes"] = state_bytes(cand.optimizer.state, cand.params)
            entry["state_bytes_per_param"] = entry["state_bytes"] / numel
        if memory:
            entry["peak_temp_bytes"] = peak_temporary_bytes(cand.step, device)
        record["candidates"][name] = entry
    overrides = SET_LIMITS.get(shape_set.name, {})
    record["ratios"] = [
        {
            "pair": f"{a} / {b}",
            "limit": overrides.get(f"{a} / {b}", limit),
            **ratio_summary(times[a], times[b]),
        }
        for a, b, limit in COMPARISONS
        if a in times and b in times
    ]
    record["largest_bucket_bytes"] = largest_bucket_bytes(shape_set)
    record["targets"] = _targets(
        shape_set.name, record["candidates"], record["ratios"], record["largest_bucket_bytes"]
    )
    return record


def run(
    sets: Sequence[str],
    names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    rounds: int = 7,
    warmup: int = 2,
    threads: int | None = 1,
    seed: int = 0,
    memory: bool = True,
    log: Any = None,
    clock: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark on the named shape sets; returns the JSON-ready result.

    ``clock=None`` picks :func:`~.timing.default_clock`: process CPU time for single-threaded CPU
    runs, wall time otherwise.
    """
    device = torch.device(device)
    unknown = [s for s in sets if s not in SHAPE_SETS]
    if unknown:
        raise ValueError(f"Unknown shape sets: {unknown}; valid names are {list(SHAPE_SETS)}")
    if threads is not None:
        torch.set_num_threads(threads)
    names = list(names) if names is not None else candidate_names(device)
    clock = clock or default_clock(device.type, torch.get_num_threads())
    if clock not in CLOCKS:
        raise ValueError(f"Invalid clock: {clock!r}; expected one of {list(CLOCKS)}")
    result: dict[str, Any] = {
        "machine": machine_info(device),
        "config": {
            "rounds": rounds,
            "warmup": warmup,
            "seed": seed,
            "threads": torch.get_num_threads(),
            "clock": clock,
            "ns_dtype_default": str(default_ns_dtype(device)).removeprefix("torch."),
            "max_bucket_numel": DEFAULT_MAX_BUCKET_NUMEL,
            "candidates": names,
        },
        "sets": {},
    }
    start = time.time()
    for name in sets:
        result["sets"][name] = run_set(
            SHAPE_SETS[name], names, device, rounds, warmup, seed, memory, log, clock
        )
    result["machine"]["load_average_after"] = machine_info(device)["load_average"]
    result["wall_s"] = time.time() - start
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_muon.benchmarks.step_speed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--sets", default="small,medium", help=f"comma-separated, from {list(SHAPE_SETS)}"
    )
    parser.add_argument(
        "--candidates", default="all", help="comma-separated candidate names, or 'all'"
    )
    parser.add_argument(
        "--compiled", action="store_true", help="add the torch.compile variants to 'all'"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (0: leave as is)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default=None,
        help="'cpu' (process CPU time; default with 1 CPU thread) or 'wall' (default otherwise)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the profiled memory step")
    parser.add_argument("--json", default=None, help="write the full result here")
    parser.add_argument(
        "--markdown", default=None, help="write the markdown report here (default: stdout)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    names = (
        candidate_names(device, args.compiled)
        if args.candidates == "all"
        else [c for c in args.candidates.split(",") if c]
    )
    result = run(
        [s for s in args.sets.split(",") if s],
        names,
        device,
        args.rounds,
        args.warmup,
        args.threads or None,
        args.seed,
        not args.no_memory,
        log=sys.stderr,
        clock=args.clock,
    )
    result["command"] = command_line("step_speed", argv)
    write_outputs(result, markdown(result), args.json, args.markdown)
    return result


if __name__ == "__main__":
    main()
