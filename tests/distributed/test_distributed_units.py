"""The distributed layer's pure parts and its single-process behaviour (no processes spawned)."""

from __future__ import annotations

import io
import itertools
import random
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_transformer import batches, loss_fn, make_model  # noqa: E402

import lightning_muon.distributed as lmd  # noqa: E402
from lightning_muon import NorMuon  # noqa: E402
from lightning_muon.core.orthogonalize import JORDAN, newton_schulz  # noqa: E402
from lightning_muon.engine.tensors import as_rows as _as_rows  # noqa: E402
from lightning_muon.optim.registry import OPTIMIZERS  # noqa: E402
from lightning_muon.optim.screening import finite_flags as _finite_flags  # noqa: E402


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_chunk_rows_are_torch_chunk_sizes(world: int) -> None:
    for m in range(0, 23):
        sizes = [c.shape[0] for c in torch.arange(m).chunk(world)] if m else []
        assert lmd.chunk_rows(m, world) == sizes + [0] * (world - len(sizes))


@pytest.mark.parametrize(("m", "n", "steps"), [(12, 40, 3), (40, 12, 5), (7, 7, 1)])
def test_ns_flops_counts_the_newton_schulz_matmuls(m: int, n: int, steps: int) -> None:
    with FlopCounterMode(display=False) as counter:
        newton_schulz(torch.randn(1, m, n), JORDAN, steps=steps, form="direct")
    assert lmd.ns_flops(m, n, steps) == counter.get_total_flops()


def _optimal_makespan(costs: list[float], world: int) -> float:
    return min(
        max(sum(c for c, o in zip(costs, owners, strict=True) if o == r) for r in range(world))
        for owners in itertools.product(range(world), repeat=len(costs))
    )


@pytest.mark.parametrize("world", [2, 3])
def test_owner_assignment_is_within_the_lpt_bound_of_the_optimum(world: int) -> None:
    rng = random.Random(world)
    for _ in range(25):
        costs = [float(rng.choice([1, 2, 3, 5, 8, 13])) for _ in range(rng.randint(1, 7))]
        owners = lmd.assign_owners(costs, world)
        loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == r) for r in range(world)]
        assert max(loads) <= (4 / 3 - 1 / (3 * world)) * _optimal_makespan(costs, world) + 1e-9


def test_equal_matrices_are_dealt_round_robin() -> None:
    assert lmd.assign_owners([1.0] * 6, 3) == [0, 1, 2, 0, 1, 2]


def test_configure_validates_before_changing_anything() -> None:
    opt = NorMuon(make_model())
    for kwargs, name in (
        ({"mode": "ddp"}, "mode"),
        ({"statistics": "approx"}, "statistics"),
        ({"transfer_dtype": "int8"}, "transfer_dtype"),
    ):
        with pytest.raises(ValueError, match=name):
            lmd.configure(opt, **kwargs)
    assert getattr(opt, "distributed_options", None) is None


def test_one_process_has_no_engine_and_no_collectives() -> None:
    model = make_model()
    opt = NorMuon(model)
    lmd.configure(opt, statistics="per_shard")
    loss_fn(model, batches(1)[0]).backward()
    opt.step()
    assert lmd.engine_of(opt) is None


def test_empty_shards_have_rows_views_and_are_finite() -> None:
    assert _as_rows(torch.zeros(0, 3, 4), 0).shape == (0, 12)
    assert _as_rows(torch.zeros(0, 1), 0).shape == (0, 1)
    flags = _finite_flags([torch.zeros(0, 5), torch.tensor([1.0, float("nan")]), torch.ones(2)])
    assert flags.tolist() == [True, False, True]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_torch_state_dict_api_round_trip(name: str) -> None:
    """``get/set_optimizer_state_dict`` (what DCP, Lightning and Fabric use) restore the continuation."""
    cls = OPTIMIZERS[name]
    data = batches(3)
    model = make_model()
    opt = cls(model)
    for tokens in data[:2]:
        opt.zero_grad()
        loss_fn(model, tokens).backward()
        opt.step()
    buffer = io.BytesIO()  # a checkpoint: the live state dict shares its tensors with `opt`
    torch.save(get_optimizer_state_dict(model, opt), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = make_model()
    resumed.load_state_dict(model.state_dict())
    resumed_opt = cls(resumed)
    set_optimizer_state_dict(resumed, resumed_opt, state)
    for m, o in ((model, opt), (resumed, resumed_opt)):
        o.zero_grad()
        loss_fn(m, data[2]).backward()
        o.step()
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_state_initialisation_by_the_checkpoint_api_leaves_weights_untouched() -> None:
    """DCP creates state by a zero-gradient step with lr = 0; large zero updates must not leak NaN."""
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 2))
    before = [p.detach().clone() for p in model.parameters()]
    get_optimizer_state_dict(model, NorMuon(model))
    for p, b in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=0)
