"""load_state_dict checks everything before it changes anything: the algorithm that saved the state,
every state tensor's exact shape, every group value (as the constructor checks it), missing
entries; it keeps the loading optimizer's parameter names and turns a numeric step into a tensor."""

from __future__ import annotations

import copy
import functools
import io
import itertools

import pytest
import torch

from lightning_muon.optim.registry import OPTIMIZERS

from ..optim_specs import INVALID_ARGS
from .entry_kit import (
    NAMES,
    REGISTRY,
    VOCAB,
    all_params,
    assert_same,
    make,
    net,
    pid_of,
    snapshot,
    train,
    without_record,
)

#: The defect's pairs run in the fast lane; every other ordered pair of the registry is `slow`.
FAST_PAIRS = {("normuon", "muon"), ("muon_nsr", "muon_vs"), ("muon_vs", "muon_nsr")}
PAIRS = [
    pytest.param(a, b, marks=() if (a, b) in FAST_PAIRS else pytest.mark.slow)
    for a, b in itertools.permutations(NAMES, 2)
]
NOT_GROUP_VALUES = {"nonfinite", "vocab_size"}
GROUP_CASES = [
    pytest.param(name, args, key, marks=() if key in ("lr", "momentum") else pytest.mark.slow)
    for name in NAMES
    for args, key in [*INVALID_ARGS[name], ({"lr": "fast"}, "lr")]
    if not NOT_GROUP_VALUES & set(args)
]


def trained(name: str, steps: int = 1, **kwargs):
    model = net()
    opt = make(name, model, **kwargs)
    train(model, opt, steps)
    return model, opt


@functools.cache
def _saved(name: str) -> dict:
    return trained(name)[1].state_dict()


def saved_state(name: str) -> dict:
    """A fresh deep copy of the state dict of ``name`` after one step (computed once)."""
    return copy.deepcopy(_saved(name))


def refuses(opt, state_dict, match: str) -> str:
    """``load_state_dict`` raises ValueError matching ``match`` and changes nothing at all."""
    before = snapshot(opt, all_params(opt))
    with pytest.raises(ValueError, match=match) as info:
        opt.load_state_dict(state_dict)
    assert_same(before, snapshot(opt, all_params(opt)))
    return str(info.value)


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "older-format"])
@pytest.mark.parametrize("source, target", PAIRS)
def test_state_of_another_algorithm_is_refused_naming_both(source, target, recorded):
    saved = saved_state(source)
    if not recorded:
        saved = without_record(saved)
    _, opt = trained(target)
    message = refuses(opt, saved, "saved by")
    assert OPTIMIZERS[source].__name__ in message and OPTIMIZERS[target].__name__ in message
    assert "ckpt_path" in message  # the realistic trigger: --optimizer switched on resume


@pytest.mark.parametrize("name", REGISTRY)
def test_state_saved_without_a_record_still_loads_and_resumes_identically(name):
    """A state dict shaped like those of earlier versions (no record) loads when unambiguous."""
    straight_model, straight = trained(name, 4)
    model, opt = trained(name, 2)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": without_record(opt.state_dict())}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = net(seed=1)
    resumed_model.load_state_dict(saved["model"])
    resumed = make(name, resumed_model)
    resumed.load_state_dict(saved["opt"])
    train(resumed_model, resumed, 2, start=2)
    for (n, a), b in zip(
        straight_model.named_parameters(), resumed_model.parameters(), strict=True
    ):
        assert torch.equal(a, b), n


def first_matrix_key(opt, p) -> str:
    return next(k for k, v in opt.state[p].items() if k != "step" and v.shape == p.shape)


@pytest.mark.parametrize("name", REGISTRY)
@pytest.mark.parametrize("where", ["embedding exp_avg", "hidden matrix state"])
def test_a_state_tensor_with_the_right_size_but_another_shape_is_refused(name, where):
    model, source = trained(name)
    p = model.embed.weight if where == "embedding exp_avg" else model.hidden.weight
    key = "exp_avg" if where == "embedding exp_avg" else first_matrix_key(source, p)
    saved = source.state_dict()
    pid = pid_of(source, p)
    saved["state"][pid][key] = saved["state"][pid][key].t().contiguous()  # (16, 32) for (32, 16)
    _, opt = trained(name)
    message = refuses(opt, saved, "shape")
    assert key in message and str(tuple(p.shape)) in message


@pytest.mark.parametrize("shape", [(24,), (1, 24)])
def test_row_statistics_have_their_own_exact_shape(shape):
    model, source = trained("normuon")
    saved = source.state_dict()
    pid = pid_of(source, model.hidden.weight)
    saved["state"][pid]["row_second_moment"] = saved["state"][pid]["row_second_moment"].reshape(
        shape
    )
    _, opt = trained("normuon")
    assert "(24, 1)" in refuses(opt, saved, "row_second_moment")


@pytest.mark.parametrize("name, args, key", GROUP_CASES)
def test_group_values_go_through_the_constructors_checks(name, args, key):
    saved = saved_state(name)
    saved["param_groups"][0].update(args)
    _, opt = trained(name)
    refuses(opt, saved, key)


@pytest.mark.parametrize("name", REGISTRY)
@pytest.mark.parametrize("key", ["lr", "momentum", "adamw_betas"])
def test_a_missing_group_value_is_refused(name, key):
    saved = saved_state(name)
    del saved["param_groups"][0][key]
    _, opt = trained(name)
    refuses(opt, saved, f"no '{key}'")


@pytest.mark.parametrize("name", REGISTRY)
@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_missing_or_unexpected_state_entries_are_refused(name, change):
    model, source = trained(name)
    saved = source.state_dict()
    pid = pid_of(source, model.hidden.weight)
    if change == "missing":
        del saved["state"][pid][first_matrix_key(source, model.hidden.weight)]
    else:
        saved["state"][pid]["exp_avg_sq_extra"] = torch.zeros(24, 16)
    _, opt = trained(name)
    refuses(opt, saved, change)


@pytest.mark.parametrize("name", REGISTRY)
def test_loading_a_plain_tensor_optimizers_state_keeps_the_real_names(name):
    model = net()
    plain = make(name, list(model.parameters()), vocab_size=VOCAB)  # names param0, param1, ...
    train(model, plain, 1)
    assert plain.param_groups[0]["param_names"][0] == "param1"
    target = make(name, net())
    names = [list(g["param_names"]) for g in target.param_groups]
    target.load_state_dict(plain.state_dict())
    assert [g["param_names"] for g in target.param_groups] == names
    assert names[0] == ["hidden.weight", "hidden2.weight"]


@pytest.mark.parametrize("name", REGISTRY)
def test_a_numeric_step_is_turned_back_into_a_tensor(name):
    straight_model, straight = trained(name, 3)
    model, opt = trained(name, 2)
    saved = opt.state_dict()
    for entry in saved["state"].values():
        entry["step"] = int(entry["step"])
    resumed_model = net(seed=1)
    resumed_model.load_state_dict(model.state_dict())
    resumed = make(name, resumed_model)
    resumed.load_state_dict(saved)
    assert all(torch.is_tensor(s["step"]) for s in resumed.state.values())
    train(resumed_model, resumed, 1, start=2)
    for a, b in zip(straight_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert {float(s["step"]) for s in resumed.state.values()} == {3.0}


def test_the_record_names_algorithm_class_format_and_shapes():
    model, opt = trained("normuon")
    record = opt.state_dict()["param_groups"][0]["state_record"]
    assert record == {
        "format": 1,
        "algorithm": "normuon",
        "class": "NorMuon",
        "param_shapes": [(24, 16), (16, 24)],
    }
    assert opt.param_groups[0].get("state_record") is None  # the live groups do not carry it


def test_state_made_for_other_shapes_is_refused_even_without_state():
    """The record catches a model change for parameters that have no state yet."""
    saved = make("muon", net()).state_dict()  # never stepped: no state at all
    saved["param_groups"][0]["state_record"]["param_shapes"][0] = (16, 24)
    _, opt = trained("muon")
    refuses(opt, saved, r"saved for a parameter of shape \(16, 24\)")


def test_state_from_a_newer_format_or_a_non_muon_optimizer_is_refused():
    model, opt = trained("muon")
    saved = opt.state_dict()
    saved["param_groups"][0]["state_record"]["format"] = 2
    refuses(opt, saved, "newer lightning_muon")
    adamw = torch.optim.AdamW(
        [{"params": g["params"]} for g in opt.param_groups], lr=1e-3
    ).state_dict()
    refuses(opt, adamw, "not saved by a Muon-family optimizer")
