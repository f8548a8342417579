"""Schedules do not recompile the compiled hooks: 20 steps of a momentum + lr (+ beta2) schedule
compile each hook once, counted by torch._dynamo's own counters."""

import warnings

import pytest
import torch
from torch._dynamo.utils import counters

from lightning_muon.optim.registry import OPTIMIZERS


@pytest.mark.parametrize("name", ["muon", "normuon"])
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_twenty_scheduled_steps_compile_once(name, nonfinite):
    torch._dynamo.reset()
    counters.clear()
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(16, 48, generator=gen)) for _ in range(3)]
    opt = OPTIMIZERS[name](
        [{"params": ps, "branch": "muon"}],
        compile_elementwise="aot_eager",
        nonfinite=nonfinite,
        nesterov=True,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.02, total_steps=20)
    compiled_after = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a compile failure would fall back to eager with a warning
        for k in range(20):
            group = opt.param_groups[0]
            group["momentum"] = 0.85 + 0.1 * k / 19  # a momentum warm-up, as litgpt recipes do
            if "beta2" in group:
                group["beta2"] = 0.9 + 0.05 * k / 19
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
            schedule.step()
            compiled_after.append(counters["stats"]["unique_graphs"])
    hooks = 2 if name == "normuon" else 1  # Muon's static scale skips finish
    assert compiled_after[0] == hooks
    assert compiled_after[-1] == hooks, compiled_after  # nothing recompiled over 20 steps
    assert all(torch.isfinite(p).all() for p in ps)
