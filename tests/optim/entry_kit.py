"""Shared pieces of the entry-point tests: a small model, training, and exact before/after snapshots."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from lightning_muon.optim.registry import OPTIMIZERS

from ..optim_specs import TEST_KWARGS

NAMES = sorted(OPTIMIZERS)
VOCAB = 32


class Net(nn.Module):
    """Embedding (32, 16), two hidden matrices, a norm and a head: both branches, several shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.hidden = nn.Linear(16, 24)
        self.hidden2 = nn.Linear(24, 16, bias=False)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.hidden2(torch.relu(self.hidden(self.embed(tokens))))
        return self.head(self.norm(x))


def net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def make(name: str, model: Any, **kwargs: Any) -> torch.optim.Optimizer:
    return OPTIMIZERS[name](model, **{**TEST_KWARGS[name], **kwargs})


def backward(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (4, 6), generator=g)
    loss = nn.functional.cross_entropy(
        model(tokens).reshape(-1, VOCAB), tokens.roll(1, 1).reshape(-1)
    )
    loss.backward()


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, start: int = 0) -> None:
    for i in range(start, start + steps):
        opt.zero_grad()
        backward(model, i)
        opt.step()


def snapshot(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> dict[str, Any]:
    """Every weight, every state value, every group value (not the tensors' identities)."""
    return {
        "weights": [p.detach().clone() for p in params],
        "state": [
            {
                k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v)
                for k, v in opt.state[p].items()
            }
            if p in opt.state
            else None
            for p in params
        ],
        "groups": [
            {k: copy.deepcopy(v) for k, v in g.items() if k != "params"} | {"n": len(g["params"])}
            for g in opt.param_groups
        ],
        "routing": str(getattr(opt, "routing", "")),
    }


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Bitwise equality of nested snapshots (tensors: same shape, dtype and bits)."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.shape == b.shape and a.dtype == b.dtype, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, sorted(a), sorted(b))
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def all_params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


def without_record(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A state dict shaped like those saved before the algorithm record existed."""
    out = copy.deepcopy(state_dict)
    for group in out["param_groups"]:
        group.pop("state_record", None)
    return out


def pid_of(opt: torch.optim.Optimizer, p: torch.Tensor) -> int:
    """The index ``state_dict()`` uses for ``p`` (by identity)."""
    return next(i for i, q in enumerate(all_params(opt)) if q is p)


#: Registry entries the fast lane runs every grid for; the others run under ``-m slow``.
FAST_NAMES = ("muon", "normuon")


def lane(name: str, *values: Any) -> Any:
    """``pytest.param(name, *values)``, marked ``slow`` unless ``name`` is in :data:`FAST_NAMES`."""
    import pytest

    return pytest.param(name, *values, marks=() if name in FAST_NAMES else pytest.mark.slow)


REGISTRY = [lane(name) for name in NAMES]
