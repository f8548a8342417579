"""The hot path reads nothing back to the host: 0 reads per step with nonfinite="skip", exactly one
(the finiteness flag) with "raise"; a skipped step still changes nothing."""

import pytest
import torch

from lightning_muon.optim.registry import OPTIMIZERS

from .host_reads import count_host_reads


def _model_and_data():
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.ReLU(), torch.nn.Linear(24, 6))
    x, y = torch.randn(16, 12, generator=gen), torch.randn(16, 6, generator=gen)
    return model, x, y


def _backward(model, x, y):
    model.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(x), y).backward()


def test_counter_sees_every_conversion():
    t = torch.tensor([1.0, 2.0])
    with count_host_reads() as reads:
        bool(t.all()), t.tolist(), t[0].item(), float(t[1]), int(t[0])
    assert sum(reads.values()) == 5


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize(("mode", "expected"), [("skip", 0), ("raise", 1)])
def test_host_reads_per_step(name, mode, expected):
    model, x, y = _model_and_data()
    opt = OPTIMIZERS[name](model, nonfinite=mode)
    for _ in range(2):  # state exists from here on
        _backward(model, x, y)
        opt.step()
    counts = []
    for _ in range(3):
        _backward(model, x, y)
        with count_host_reads() as reads:
            opt.step()
        counts.append(sum(reads.values()))
    assert counts == [expected] * 3, (counts, dict(reads))


@pytest.mark.parametrize("name", ["muon", "normuon", "adamuon"])
def test_a_skipped_step_changes_nothing_and_reads_nothing(name):
    model, x, y = _model_and_data()
    opt = OPTIMIZERS[name](model, nonfinite="skip", weight_decay=0.1)
    _backward(model, x, y)
    opt.step()
    weights = [p.detach().clone() for p in model.parameters()]
    state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
    _backward(model, x, y)
    model[0].weight.grad[0, 0] = float("nan")
    with count_host_reads() as reads:
        opt.step()
    assert sum(reads.values()) == 0
    for before, p in zip(weights, model.parameters(), strict=True):
        assert torch.equal(before, p)
    for p, s in opt.state.items():
        for k, v in s.items():
            assert torch.equal(state[id(p)][k], v), k
    assert opt.skipped_steps == 1
    _backward(model, x, y)  # a finite step afterwards steps as usual
    opt.step()
    assert not torch.equal(weights[0], model[0].weight)
    assert opt.skipped_steps == 1
