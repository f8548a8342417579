"""The fast tier (the optimizer classes) against the package's reference tier, for every registry variant.

``lightning_muon.reference`` is a per-matrix loop without batching or routing; both run in float64
(the fast tier's Newton–Schulz too: ``ns_dtype="float64"``) over several steps and shapes: 1×n,
n×1, tall, wide, square, a conv kernel, and a weight whose gradients all have rank 2. The reference
tier itself is checked against the independent numpy oracles of ``tests/optim/reference.py``.
"""

import doctest
import importlib

import pytest
import torch

from lightning_muon.optim.registry import SPECS

from ..optim_specs import variant_params
from .reference import ORACLES, Reference
from .test_oracles import exact_cases, tolerance

SHAPES = [(12, 20), (20, 12), (16, 16), (1, 9), (9, 1), (10, 14), (6, 2, 3)]
RANK_DEFICIENT = 5
STEPS = 5


def weights_and_gradients(seed=0):
    generator = torch.Generator().manual_seed(seed)
    weights = [torch.randn(*s, dtype=torch.float64, generator=generator) for s in SHAPES]
    steps = []
    for _ in range(STEPS):
        grads = [torch.randn(w.shape, dtype=torch.float64, generator=generator) for w in weights]
        low = torch.randn(10, 2, dtype=torch.float64, generator=generator)
        grads[RANK_DEFICIENT] = low @ torch.randn(2, 14, dtype=torch.float64, generator=generator)
        steps.append(grads)
    return weights, steps


#: Measured worst case 2e-10 (an ill-conditioned exact polar factor), 1e-11 (15 Newton–Schulz
#: steps amplifying the round-off of tiny singular values); an algorithmic slip is 1e-3 or more.
TOLERANCE = 1e-9


@pytest.mark.parametrize(("spec", "variant"), variant_params("muon", pending=True))
def test_fast_tier_matches_reference_tier(spec, variant):
    kwargs = {**variant.kwargs, "ns_dtype": "float64"}
    weights, steps = weights_and_gradients()
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    fast = spec.build([{"params": params, "branch": "muon"}], **kwargs)
    reference = spec.reference_optimizer(weights, **kwargs)
    for grads in steps:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        fast.step()
        expected = reference.step(grads)
        for i, (p, e) in enumerate(zip(params, expected)):
            scale = max(1.0, float(e.abs().max()))
            tol = TOLERANCE * max(
                1.0, fast.param_groups[0]["lr"] / 1e-3 if i == RANK_DEFICIENT else 1.0
            )
            torch.testing.assert_close(
                p.detach(), e, atol=tol * scale, rtol=tol, msg=f"shape {SHAPES[i]}"
            )


@pytest.mark.parametrize(("spec", "variant"), variant_params("baseline"))
def test_torch_adamw_matches_the_reference_tier(spec, variant):
    weights, steps = weights_and_gradients(1)
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    fast = spec.build(params, **variant.kwargs)
    reference = spec.reference_optimizer(weights, **variant.kwargs)
    for grads in steps:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        fast.step()
        expected = reference.step(grads)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize(("spec", "kwargs"), exact_cases())
def test_reference_tier_matches_the_independent_oracle(spec, kwargs):
    weights, steps = weights_and_gradients(2)
    reference = spec.reference_optimizer(weights, **kwargs)
    hp = spec.hyperparameters(**kwargs)
    oracles = [Reference(w.reshape(w.shape[0], -1), **hp) for w in weights]
    for grads in steps:
        ours = reference.step(grads)
        theirs = [ORACLES[spec.name](o, g.reshape(o.m, o.n)) for o, g in zip(oracles, grads)]
    for i, (a, b) in enumerate(zip(ours, theirs)):
        tol = tolerance(i, hp["lr"])
        torch.testing.assert_close(a, b.reshape(a.shape), atol=tol, rtol=tol)


def test_every_spec_has_a_reference_and_a_default_variant():
    for spec in SPECS.values():
        assert spec.reference.__module__ == "lightning_muon.reference.algorithms", spec.name
        assert spec.variants[0].label == "default" and not spec.variants[0].kwargs


def test_a_gradient_of_none_leaves_the_reference_weight_and_state_alone():
    W = torch.randn(4, 6, dtype=torch.float64)
    reference = SPECS["normuon"].reference_optimizer([W, W], weight_decay=0.5)
    first, second = reference.step([torch.randn(4, 6, dtype=torch.float64), None])
    assert torch.equal(second, W) and not torch.equal(first, W)
    assert reference.states[1] == {}


@pytest.mark.parametrize(
    "module",
    [
        "lightning_muon.reference",
        "lightning_muon.reference.linalg",
        "lightning_muon.reference.algorithms",
        "lightning_muon.reference.optimizer",
        "lightning_muon.optim.registry",
        "lightning_muon.optim.spec",
        "lightning_muon.core.spectral",
    ],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
