"""The AdamW branch: embeddings, heads, norms, biases and scalars.

The branch runs ``torch.optim.adamw``'s own kernels (``fused`` where the device supports it,
``foreach`` otherwise) with learning rate ``group["lr"] · group["adamw_lr_ratio"]``, so a
scheduler or a training loop that rewrites ``group["lr"]`` keeps both branches in proportion.
Parameters stored in bf16/fp16 keep fp32 moments: they are updated through an fp32 copy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.adamw import adamw

from ..engine.tensors import is_dtensor as _is_dtensor
from ..engine.tensors import local as _local

_NATIVE = (torch.float32, torch.float64)


def _init_state(p: torch.Tensor, state: dict[str, Any]) -> None:
    if not state:
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        state["exp_avg"] = torch.zeros_like(
            p, dtype=torch.float32, memory_format=torch.preserve_format
        )
        state["exp_avg_sq"] = torch.zeros_like(
            p, dtype=torch.float32, memory_format=torch.preserve_format
        )


def _fused_supported(device: torch.device) -> bool:
    return device.type in ("cpu", "cuda", "mps", "xpu")


def adamw_group_step(
    group: dict[str, Any],
    state: dict[torch.Tensor, dict[str, Any]],
    found_inf: torch.Tensor | None = None,
) -> None:
    """One AdamW step for every parameter of ``group`` that has a gradient.

    ``found_inf`` (a 0-d bool device flag, ``nonfinite="skip"``): when true, the fused kernel
    changes nothing (fused AdamW's own ``found_inf``); every working copy is fp32, so the fused
    kernel serves every dtype. Devices without it read the flag once.
    """
    params = [p for p in group["params"] if p.grad is not None]
    if not params:
        return
    for p in params:
        _init_state(p, state[p])
    beta1, beta2 = group["adamw_betas"]
    hyper = {
        "amsgrad": False,
        "beta1": beta1,
        "beta2": beta2,
        "lr": float(group["lr"]) * group["adamw_lr_ratio"],  # a one-element tensor lr is accepted
        "weight_decay": group["adamw_weight_decay"],
        "eps": group["adamw_eps"],
        "maximize": False,
    }
    by_kind: dict[tuple[torch.device, bool], list[torch.Tensor]] = {}
    for p in params:
        by_kind.setdefault((p.device, p.dtype == torch.float32 and not _is_dtensor(p)), []).append(
            p
        )
    for (device, native), plist in by_kind.items():
        states = [state[p] for p in plist]
        fused = _fused_supported(device)
        if found_inf is not None and not fused and bool(found_inf):
            continue
        # Low-precision (or sharded) parameters are updated through fp32 working copies.
        work = plist if native else [_local(p).to(_local(state[p]["exp_avg"]).dtype) for p in plist]
        grads = [
            p.grad if native else _local(p.grad).to(w.dtype)
            for p, w in zip(plist, work, strict=True)
        ]
        adamw(
            work,
            grads,
            [_local(s["exp_avg"]) for s in states],
            [_local(s["exp_avg_sq"]) for s in states],
            [],
            [s["step"] for s in states],
            foreach=None if fused else True,
            fused=fused or None,
            found_inf=found_inf.float() if fused and found_inf is not None else None,
            **hyper,
        )
        if not native:
            for p, w in zip(plist, work, strict=True):
                _local(p).copy_(w)
