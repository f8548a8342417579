"""What the efficiency benchmark measures: grid centres, reference settings, defaults, presets.

Every setting is explicit (an lr and constructor kwargs), so a run means the same after the
optimizers' defaults change. See :mod:`lightning_muon.benchmarks.efficiency` for the protocol.

Example:
    >>> from lightning_muon.benchmarks.efficiency_config import GRIDS, HYBRID
    >>> GRIDS["muon"]
    ('muon', 0.02, 0.0003, {'scale': 'keller'})
    >>> HYBRID
    ('muon', 0.01, {'scale': 'moonlight', 'rms_target': 0.2, 'adamw_lr_ratio': 1.0})
"""

from __future__ import annotations

import json
from typing import Any

OPTIMIZERS = ("adamw", "muon", "normuon", "adamuon", "muon_nsr", "muon_vs", "spectral_muon")
#: Grid label: (optimizer, lr0, adamw_lr0, fixed kwargs). The fixed kwargs pin each grid's scale
#: rule, so a grid means the same whatever the class defaults are. Centres: the best cells of an
#: earlier, partial grid (AdamW 2e-3, next to torch's 1e-3; "muon" is Muon with the Moonlight rule,
#: the default since 0.2; "muon_keller" Muon with the paper's rule, searched along the AdamW-branch
#: axis at the paper's lr 0.02, the best matrix lr of that earlier grid).
GRIDS: dict[str, tuple[str, float, float | None, dict[str, Any]]] = {
    "adamw": ("adamw", 2e-3, None, {}),
    "muon": ("muon", 1e-2, 1e-2, {"scale": "moonlight", "rms_target": 0.2}),
    "muon_keller": ("muon", 0.02, 1.2e-3, {"scale": "keller"}),
    "normuon": ("normuon", 8e-3, 1.6e-2, {"scale": "rms"}),
    "adamuon": ("adamuon", 1.6e-2, 3.2e-2, {"scale": "rms"}),
    "muon_nsr": ("muon_nsr", 1.6e-2, 1.6e-2, {"scale": "moonlight"}),
    "muon_vs": ("muon_vs", 1.6e-2, 1.6e-2, {"scale": "moonlight"}),
    "spectral_muon": ("spectral_muon", 0.02, 6e-4, {"power": 0.5, "scale": "auto"}),
}
#: An optimizer without a grid runs at the best cell of the one named here.
BORROWED_CELL = {"muon_vs": "muon_nsr"}
#: The plain one-lr Muon + AdamW hybrid with Moonlight scaling (the reference of the Muon target).
HYBRID = ("muon", 1e-2, {"scale": "moonlight", "rms_target": 0.2, "adamw_lr_ratio": 1.0})
#: The 0.1 defaults of lr, adamw_lr_ratio and scale (explicit, so they stay what they were).
V01_DEFAULTS: dict[str, tuple[float, dict[str, Any]]] = {
    "muon": (0.02, {"scale": "keller", "adamw_lr_ratio": 0.015}),
    "normuon": (1e-3, {"scale": "rms", "adamw_lr_ratio": 1.0}),
    "adamuon": (1e-3, {"scale": "rms", "adamw_lr_ratio": 1.0}),
    "muon_nsr": (1e-3, {"scale": "moonlight", "adamw_lr_ratio": 1.0}),
    "muon_vs": (1e-3, {"scale": "moonlight", "adamw_lr_ratio": 1.0}),
    "spectral_muon": (1e-2, {"power": 0.5, "scale": "auto", "adamw_lr_ratio": 0.03}),
}
#: The classes' defaults (lr, kwargs), measured with the kwargs passed explicitly (a test checks
#: that they equal the constructors' defaults). The rule: the
#: orthogonal update's RMS matched to AdamW's (``scale="moonlight"``, or ``"rms"`` where the paper's
#: update is RMS-normalised) and ``adamw_lr_ratio=1``, so one lr serves both branches; each lr the
#: best factor-of-2 value of its grid at that ratio (Muon: the one-lr Moonlight hybrid).
DEFAULTS: dict[str, tuple[float, dict[str, Any]]] = {
    "muon": HYBRID[1:],
    "normuon": (8e-3, {"scale": "rms", "adamw_lr_ratio": 1.0}),
    "adamuon": (1.6e-2, {"scale": "rms", "adamw_lr_ratio": 1.0}),
    "muon_nsr": (1.6e-2, {"scale": "moonlight", "adamw_lr_ratio": 1.0}),
    "muon_vs": (1.6e-2, {"scale": "moonlight", "adamw_lr_ratio": 1.0}),
}
#: One change at a time at AdaMuon's best cell: label → kwargs overriding the grid's. A huge ε
#: makes ``O/(sqrt(V)+ε)`` proportional to ``O``: the second moment drops out (sign-Muon).
ADAMUON_ABLATION: dict[str, dict[str, Any]] = {
    "no sign (Muon + Adam)": {"sign_stabilize": False},
    "no second moment (ε = 1e3)": {"eps": 1e3},
    "no sign, no second moment (Muon, RMS 0.2)": {"sign_stabilize": False, "eps": 1e3},
    "ε = 1e-2": {"eps": 1e-2},
    "Nesterov (official code)": {"nesterov": True},
    "weight decay 0": {"weight_decay": 0.0},
}
PRESETS: dict[str, dict[str, Any]] = {
    # 4 layers x 128 wide, 512 tokens/step, 400 steps, 1 thread: ~30 s per run on a 2-core CPU.
    "cpu": dict(
        n_layer=4, n_embd=128, n_head=4, block_size=128, steps=400, batch_size=4,
        warmup_steps=20, eval_every=20, val_windows=64, max_bytes=4_000_000, seeds=[0, 1, 2],
        device="cpu", bf16=False, ns_dtype="float32",
    ),
    # The same with 1024 tokens/step (the recipes/litgpt/tiny setting): about twice the time.
    "cpu-long": dict(
        n_layer=4, n_embd=128, n_head=4, block_size=128, steps=400, batch_size=8,
        warmup_steps=20, eval_every=20, val_windows=64, max_bytes=4_000_000, seeds=[0, 1, 2],
        device="cpu", bf16=False, ns_dtype="float32",
    ),
    # GPT-2-small class (12 x 768, context 1024), 16k tokens/step, 1000 steps (1.4 passes over
    # the 12 MB standard library), bf16 autocast.
    "gpu": dict(
        n_layer=12, n_embd=768, n_head=12, block_size=1024, steps=1000, batch_size=16,
        warmup_steps=100, eval_every=50, val_windows=256, max_bytes=None, seeds=[0, 1, 2],
        device="cuda", bf16=True, ns_dtype="bfloat16",
    ),
}  # fmt: skip


def run_key(name: str, lr: float, seed: int, kwargs: dict[str, Any]) -> tuple[str, str, int, str]:
    """The identity of a run in the cache (floats to 10 significant digits, so that a grid's
    ``3e-4 / 0.02`` and a literal ``0.015`` are the same run)."""
    norm = {k: float(f"{v:.10g}") if isinstance(v, float) else v for k, v in kwargs.items()}
    return name, f"{float(lr):.10g}", seed, json.dumps(norm, sort_keys=True)
