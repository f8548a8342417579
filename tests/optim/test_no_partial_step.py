"""No error path leaves a partial step behind: every weight, every state tensor and every group
value is compared bitwise before and after each rejected call, for every optimizer of the registry."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from lightning_muon.optim.registry import OPTIMIZERS

from .entry_kit import (
    NAMES,
    REGISTRY,
    all_params,
    assert_same,
    backward,
    make,
    net,
    pid_of,
    snapshot,
    train,
)


def with_grads(opt, model, seed=7):
    opt.zero_grad()
    backward(model, seed)


def bad_grad(fill: Callable[[torch.nn.Module], None]):
    def action(opt, model):
        with_grads(opt, model)
        fill(model)
        opt.step()

    return action


def set_nan_last(model):
    model.head.bias.grad[-1] = float("nan")  # the last group's last parameter: all others first


def set_inf_hidden(model):
    model.hidden2.weight.grad[0, 0] = float("inf")


def set_sparse(model):
    model.head.bias.grad = model.head.bias.grad.to_sparse()


def set_complex(model):
    model.norm.weight.grad = torch.complex(model.norm.weight.grad, model.norm.weight.grad)


def raising_closure(opt, model):
    def closure():
        with_grads(opt, model)
        raise KeyboardInterrupt

    opt.step(closure)


def add_group(**values):
    def action(opt, model):
        layer = torch.nn.Linear(16, 8)
        opt.add_param_group({"params": [layer.weight, layer.bias], "branch": "muon", **values})

    return action


def load_from(name):
    def action(opt, model):
        _, other = trained_pair(name)
        opt.load_state_dict(other.state_dict())

    return action


def load_transposed(opt, model):
    saved = opt.state_dict()
    pid = pid_of(opt, model.hidden.weight)
    key = next(k for k, v in saved["state"][pid].items() if k != "step" and v.ndim == 2)
    saved["state"][pid] = {**saved["state"][pid], key: saved["state"][pid][key].t()}
    opt.load_state_dict(saved)


def load_without_momentum(opt, model):
    saved = opt.state_dict()
    saved["param_groups"][0] = {
        k: v for k, v in saved["param_groups"][0].items() if k != "momentum"
    }
    opt.load_state_dict(saved)


ACTIONS = {
    "nan in the last parameter": (bad_grad(set_nan_last), FloatingPointError),
    "inf in a hidden matrix": (bad_grad(set_inf_hidden), FloatingPointError),
    "sparse gradient": (bad_grad(set_sparse), RuntimeError),
    "complex gradient": (bad_grad(set_complex), RuntimeError),
    "closure raises": (raising_closure, KeyboardInterrupt),
    "add_param_group lr=-1": (add_group(lr=-1.0), ValueError),
    "add_param_group momentum=2.0": (add_group(momentum=2.0), ValueError),
    "add_param_group 1-D in a matrix group": (add_group(), ValueError),
    "load another algorithm's state": (None, ValueError),
    "load a transposed state tensor": (load_transposed, ValueError),
    "load a group without momentum": (load_without_momentum, ValueError),
}


def trained_pair(name, **kwargs):
    model = net()
    opt = make(name, model, **kwargs)
    train(model, opt, 2)
    return model, opt


@pytest.mark.parametrize("label", sorted(ACTIONS))
@pytest.mark.parametrize("name", REGISTRY)
def test_a_rejected_call_changes_nothing(name, label):
    action, error = ACTIONS[label]
    if action is None:
        action = load_from(next(n for n in NAMES if n != name))
    model, opt = trained_pair(name)
    params = all_params(opt)
    before = snapshot(opt, params)
    skipped = opt.skipped_steps
    with pytest.raises(error):
        action(opt, model)
    assert_same(before, snapshot(opt, params), label)
    assert opt.skipped_steps == skipped
    with_grads(opt, model, seed=8)  # and the optimizer still works afterwards
    opt.step()


@pytest.mark.parametrize("name", REGISTRY)
def test_a_skipped_step_changes_nothing_but_the_counter(name):
    model, opt = trained_pair(name, nonfinite="skip")
    params = all_params(opt)
    before = snapshot(opt, params)
    bad_grad(set_nan_last)(opt, model)
    assert_same(before, snapshot(opt, params))
    assert opt.skipped_steps == 1


@pytest.mark.parametrize("name", REGISTRY)
def test_an_invalid_engine_option_set_after_construction_changes_nothing(name):
    """An engine option is a group value; set to garbage later, a step that uses it is refused whole."""
    model, opt = trained_pair(name)
    opt.param_groups[0]["ns_form"] = "bogus"  # a group value changed after construction
    params = all_params(opt)
    before = snapshot(opt, params)
    try:
        bad_grad(lambda m: None)(opt, model)
    except ValueError as err:
        assert "ns_form" in str(err)
        assert_same(before, snapshot(opt, params))
    else:  # the algorithm does not use Newton–Schulz with this setting (SpectralMuon p > 0)
        assert name == "spectral_muon"


def test_every_registry_entry_is_covered():
    assert set(NAMES) == set(OPTIMIZERS)
