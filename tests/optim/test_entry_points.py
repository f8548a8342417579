"""Every way of changing an optimizer besides the constructor keeps the constructor's promises:
add_param_group (routing and checks), copy.deepcopy and pickle (the whole configuration), and
tensor learning rates (accepted as torch.optim.Muon accepts them)."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

import lightning_muon as lm
from lightning_muon.distributed import configure

from ..optim_specs import INVALID_ARGS
from .entry_kit import (
    NAMES,
    REGISTRY,
    all_params,
    assert_same,
    backward,
    lane,
    make,
    net,
    snapshot,
    train,
)

ADD_CASES = [
    lane(name, args, key)
    for name in NAMES
    for args, key in INVALID_ARGS[name]
    if key in ("lr", "momentum") and not {"nonfinite", "vocab_size"} & set(args)
] + [lane(name, {"momentum": 2.0}, "momentum") for name in NAMES]


def new_layer(seed: int = 5) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(16, 8)


def refused(opt, group, match, error=ValueError):
    before = snapshot(opt, all_params(opt))
    with pytest.raises(error, match=match):
        opt.add_param_group(group)
    assert_same(before, snapshot(opt, all_params(opt)))


@pytest.mark.parametrize("name, args, key", ADD_CASES)
def test_add_param_group_checks_hyperparameters_like_the_constructor(name, args, key):
    model = net()
    opt = make(name, model)
    train(model, opt, 1)
    layer = new_layer()
    refused(opt, {"params": [layer.weight], "branch": "muon", **args}, key)


@pytest.mark.parametrize("name", REGISTRY)
def test_add_param_group_refuses_a_bogus_branch_a_vector_in_a_matrix_group_and_duplicates(name):
    model = net()
    opt = make(name, model)
    train(model, opt, 1)
    layer = new_layer()
    refused(opt, {"params": [layer.weight], "branch": "bogus"}, "branch")
    refused(opt, {"params": [layer.weight, layer.bias], "branch": "muon"}, "not a matrix")
    refused(opt, {"params": [model.hidden.weight], "branch": "muon"}, "more than one param group")
    refused(opt, {"params": {layer.weight}}, "ordered collections", TypeError)


def constructor_twin(name, layer, **kwargs):
    """The same layer given to the constructor: the oracle of the routing and the update."""
    return make(name, [layer.weight, layer.bias], **kwargs)


@pytest.mark.parametrize("name", REGISTRY)
def test_a_plain_torch_group_is_routed_as_the_constructor_routes_it(name):
    model = net()
    opt = make(name, model)
    train(model, opt, 1)
    layer, twin_layer = new_layer(), new_layer()
    with pytest.warns(UserWarning, match="routing by shape only"):
        opt.add_param_group({"params": [layer.weight, layer.bias], "lr": 0.01})
    with pytest.warns(UserWarning, match="routing by shape only"):
        twin = constructor_twin(name, twin_layer, lr=0.01)
    added = opt.param_groups[-2:]
    assert [(g["branch"], len(g["params"])) for g in added] == [("muon", 1), ("adamw", 1)]
    assert added[0]["params"][0] is layer.weight and added[1]["params"][0] is layer.bias
    assert [e.branch for e in opt.routing.entries[-2:]] == ["muon", "adamw"]
    for a, b in zip(added, twin.param_groups, strict=True):
        assert {k: v for k, v in a.items() if k not in ("params", "param_names", "name")} == {
            k: v for k, v in b.items() if k not in ("params", "param_names", "name")
        }
    for step in range(3):  # the added layer trains exactly as the constructor's would
        x = torch.randn(4, 16, generator=torch.Generator().manual_seed(step))
        opt.zero_grad(), twin.zero_grad()
        backward(model, step)
        layer(x).square().mean().backward()
        twin_layer(x).square().mean().backward()
        opt.step(), twin.step()
        assert torch.equal(layer.weight, twin_layer.weight) and torch.equal(
            layer.bias, twin_layer.bias
        )


def test_the_adamw_part_of_an_added_group_matches_torch_adamw():
    model = net()
    opt = lm.Muon(model, adamw_lr_ratio=0.5)
    layer = new_layer()
    bias = layer.bias.detach().clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.add_param_group({"params": [layer.weight, layer.bias], "lr": 0.02})
    oracle = torch.optim.AdamW([bias], lr=0.01, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)
    for step in range(3):
        g = torch.randn(8, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        backward(model, step)
        layer.bias.grad, bias.grad = g.clone(), g.clone()
        opt.step(), oracle.step()
        torch.testing.assert_close(layer.bias, bias, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", REGISTRY)
def test_named_pairs_route_by_name_in_add_param_group_and_in_the_constructor(name):
    model = net()
    opt = make(name, [("hidden.weight", model.hidden.weight), ("hidden.bias", model.hidden.bias)])
    pairs = [("embed.weight", model.embed.weight), ("hidden2.weight", model.hidden2.weight)]
    opt.add_param_group({"params": pairs})
    assert [(g["branch"], g["param_names"]) for g in opt.param_groups[-2:]] == [
        ("muon", ["hidden2.weight"]),
        ("adamw", ["embed.weight"]),
    ]
    in_dict = make(name, [{"params": list(model.norm.named_parameters("norm")), "branch": "adamw"},
                          {"params": [("head.weight", model.head.weight)], "branch": "muon"}])  # fmt: skip
    assert [g["param_names"] for g in in_dict.param_groups] == [
        ["norm.weight", "norm.bias"],
        ["head.weight"],
    ]
    train(model, opt, 1)


# ---------------------------------------------------------------- copies
def configured(name):
    model = net()
    opt = make(
        name, model, nonfinite="skip", vocab_size=32, ns_form="fast", max_bucket_numel=1 << 10
    )
    configure(opt, mode="local", statistics="per_shard", transfer_dtype="bfloat16")
    train(model, opt, 2)
    model.hidden.weight.grad = torch.full_like(model.hidden.weight, float("nan"))
    opt.step()  # skipped
    assert opt.skipped_steps == 1
    return model, opt


COPIES = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda opt: pickle.loads(pickle.dumps(opt)),
}
ATTRIBUTES = (
    "nonfinite",
    "skipped_steps",
    "vocab_size",
    "distributed_options",
)


@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("name", REGISTRY)
def test_copies_keep_the_whole_configuration(name, how):
    _, opt = configured(name)
    twin = COPIES[how](opt)
    for attribute in ATTRIBUTES:
        assert getattr(twin, attribute) == getattr(opt, attribute), attribute
        assert attribute in vars(twin), attribute  # an instance value, not the class default
    assert {(g["ns_form"], g["max_bucket_numel"]) for g in twin.param_groups} == {("fast", 1 << 10)}
    assert str(twin.routing) == str(opt.routing)
    assert [e.name for e in twin.routing.entries] == [e.name for e in opt.routing.entries]
    assert_same(snapshot(opt, all_params(opt)), snapshot(twin, all_params(twin)))


@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("name", REGISTRY)
def test_a_copy_trains_exactly_as_the_original(name, how):
    model, opt = configured(name)
    twin_model = copy.deepcopy(model)
    twin = COPIES[how](opt)
    # the copy's optimizer holds copies of the parameters: point the twin model at them
    held = {id(p): i for i, p in enumerate(all_params(opt))}
    order = [held[id(p)] for p in model.parameters()]
    for (mod_name, _), i in zip(model.named_parameters(), order, strict=True):
        module_name, _, attr = mod_name.rpartition(".")
        setattr(twin_model.get_submodule(module_name), attr, all_params(twin)[i])
    nan_step = {"hidden.weight"}
    for step in range(3, 5):
        for m, o in ((model, opt), (twin_model, twin)):
            o.zero_grad()
            backward(m, step)
            if step == 4:
                for n, p in m.named_parameters():
                    if n in nan_step:
                        p.grad.fill_(float("inf"))
            o.step()
    assert twin.skipped_steps == opt.skipped_steps == 2  # "skip" survived the copy
    for a, b in zip(model.parameters(), twin_model.parameters(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- tensor learning rates
@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
@pytest.mark.parametrize("name", REGISTRY)
def test_a_one_element_tensor_lr_steps_as_the_float(name, shape):
    lr = float(torch.tensor(0.01))  # the fp32 value the tensor holds
    model, reference = net(), net()
    opt = make(name, model, lr=torch.full(shape, lr))
    oracle = make(name, reference, lr=lr)
    train(model, opt, 2), train(reference, oracle, 2)
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)
    torch_muon = torch.optim.Muon([nn.Parameter(torch.ones(4, 4))], lr=torch.full(shape, lr))
    assert torch_muon.param_groups[0]["lr"].numel() == 1  # the contract followed here


@pytest.mark.parametrize("name", REGISTRY)
def test_a_tensor_lr_with_several_elements_is_refused_at_construction(name):
    with pytest.raises(ValueError, match="Invalid lr"):
        make(name, net(), lr=torch.tensor([0.01, 0.02]))
