"""Markdown rendering of a :mod:`.step_speed` result (tables for ``docs/``).

Example:
    >>> print(fmt_ratio({"median": 0.5, "min": 0.4, "max": 0.6}))
    0.50 (0.40–0.60)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

MIB = 1 << 20


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces a run of ``python -m lightning_muon.benchmarks.<module>``."""
    return f"python -m lightning_muon.benchmarks.{module} " + " ".join(
        sys.argv[1:] if argv is None else argv
    )


def write_outputs(
    result: dict[str, Any], text: str, json_path: str | None, markdown_path: str | None = None
) -> None:
    """``result`` as JSON to ``json_path``; ``text`` to ``markdown_path``, or printed without one."""
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    if markdown_path:
        with open(markdown_path, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)


def fmt_ratio(r: dict[str, float]) -> str:
    """``median (min–max)`` of per-round ratios."""
    return f"{r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f})"


def _num(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "–" if value is None else format(value * scale, spec)


def _machine(result: dict[str, Any]) -> list[str]:
    m, c = result["machine"], result["config"]
    lines = [
        f"- command: `{result.get('command', 'python -m lightning_muon.benchmarks.step_speed')}`",
        f"- machine: {m['cpu']} ({m['cpu_count']} cores; flags {', '.join(m['cpu_flags']) or 'n/a'}),"
        f" device `{m['device']}`{', ' + m['gpu'] if 'gpu' in m else ''}",
        f"- torch {m['torch']}, {c['threads']} thread(s), {c['clock']} clock,"
        f" {c['rounds']} interleaved rounds after"
        f" {c['warmup']} warm-up step(s), Newton–Schulz default dtype {c['ns_dtype_default']},"
        f" `max_bucket_numel` {c['max_bucket_numel']}",
    ]
    if m.get("load_average"):
        after = m.get("load_average_after") or m["load_average"]
        lines.append(
            f"- load average (1 min) before / after: {m['load_average'][0]:.1f} / {after[0]:.1f}"
            f" on {m['cpu_count']} cores"
        )
    return lines


def _set_tables(name: str, s: dict[str, Any]) -> list[str]:
    probes = s["probes"]
    lines = [
        f"### `{name}`: {s['description']}",
        "",
        f"{s['hidden_matrices']} hidden matrices ({s['hidden_numel'] / 1e6:.2f} M parameters,"
        f" {s['ns_gflop_per_step']:.1f} GFLOP of direct-form Newton–Schulz per step,"
        f' {s["ns_gflop_per_step_fast_fp32"]:.1f} GFLOP with `ns_form="fast"`); AdamW-branch tensors'
        f" {s['aux_numel'] / 1e6:.2f} M. Machine in the same rounds: fp32 matmul"
        f" {probes['matmul_float32']['median_rate'] / 1e9:.0f} GFLOP/s, bf16 matmul"
        f" {probes['matmul_bfloat16']['median_rate'] / 1e9:.0f} GFLOP/s, copy"
        f" {probes['copy']['median_rate'] / 1e9:.1f} GB/s.",
        "",
        "| candidate | median step (ms) | NS GFLOP/s (direct-equivalent) or GB/s |"
        " executed rate, fraction of machine | peak temp (MiB) | state (B/param) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cname, c in s["candidates"].items():
        if "ns_gflops" in c:
            thr = f"{c['ns_gflops']:.1f} GFLOP/s"
            done = f"{c['ns_gflops_executed']:.1f} GFLOP/s, "
        else:
            thr = f"{c['gbytes_per_s']:.1f} GB/s"
            done = ""
        frac = (
            "–" if c.get("fraction") is None else f"{done}{c['fraction']:.0%} of {c['fraction_of']}"
        )
        lines.append(
            f"| `{cname}` | {c['median_s'] * 1e3:.1f} | {thr} | {frac} |"
            f" {_num(c.get('peak_temp_bytes'), '.1f', 1 / MIB)} | {_num(c.get('state_bytes_per_param'), '.2f')} |"
        )
    lines += [
        "",
        "| ratio of step times (per round) | median (min–max) | limit |",
        "|---|---:|---:|",
    ]
    for r in s["ratios"]:
        limit = "–" if r["limit"] is None else f"≤ {r['limit']}"
        lines.append(f"| {r['pair']} | {fmt_ratio(r)} | {limit} |")
    if s["targets"]:
        lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
        for t in s["targets"]:
            lines.append(
                f"| {t['target']} | {t['measured']:.3f} | {'yes' if t['met'] else '**no**'} |"
            )
    return lines + [""]


def markdown(result: dict[str, Any]) -> str:
    """The whole report: machine and configuration, then one section per shape set."""
    lines = ["## Step speed", "", *_machine(result), ""]
    for name, s in result["sets"].items():
        lines += _set_tables(name, s)
    return "\n".join(lines)
