"""Generic contract every Muon-family entry of the registry meets, over its constructor variants.

Parametrized by ``tests/optim_specs.py`` from ``lightning_muon.optim.registry.SPECS``: a new entry
or variant is tested here without editing this file.
"""

import io
import warnings

import pytest
import torch
from torch import nn

from lightning_muon.optim.registry import SPECS

from ..optim_specs import error_params, spec_params, variant_params


def make_model(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Embedding(40, 12),
        nn.Linear(12, 24),
        nn.GELU(),
        nn.Linear(24, 12, bias=False),
        nn.LayerNorm(12),
        nn.Linear(12, 40),
    )
    return model.to(dtype)


def make(spec, variant, model, **kwargs):
    """``spec``'s optimizer for ``model`` with ``variant``'s arguments (``kwargs`` win)."""
    return spec.build(model, **{**variant.kwargs, **kwargs})


def default(spec):
    return spec.variants[0]


def loss_of(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 40, (4, 6), generator=g)
    logits = model(tokens)
    return nn.functional.cross_entropy(
        logits.float().reshape(-1, 40), tokens.roll(1, 1).reshape(-1)
    )


def train(model, opt, steps, start=0):
    for i in range(start, start + steps):
        opt.zero_grad()
        loss_of(model, i).backward()
        opt.step()


def snapshot(model, opt):
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = {
        name: {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()}
        for name, p in model.named_parameters()
        if p in opt.state
    }
    return weights, state


def assert_same(a, b):
    wa, sa = a
    wb, sb = b
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert sa.keys() == sb.keys()
    for pid in sa:
        for k in sa[pid]:
            assert torch.equal(torch.as_tensor(sa[pid][k]), torch.as_tensor(sb[pid][k])), k


@pytest.mark.parametrize(("spec", "case"), error_params())
def test_invalid_hyperparameters_name_argument_and_value(spec, case):
    """Every registry entry, the AdamW baseline included, rejects its error inputs at construction."""
    model = make_model()
    params = model if spec.family == "muon" else model.parameters()
    with pytest.raises(ValueError, match=case.pattern) as info:
        spec.build(params, **case.kwargs)
    if (
        spec.family == "muon"
    ):  # ours name the argument and the value; torch's AdamW has its own form
        value = next(iter(case.kwargs.values()))
        assert case.argument in str(info.value)
        if not isinstance(value, tuple | list):  # a pair names its offending element
            assert repr(value) in str(info.value) or str(value) in str(info.value)


@pytest.mark.parametrize("spec", spec_params())
def test_closure_is_called_with_grad_enabled_and_its_loss_returned(spec):
    model = make_model()
    opt = make(spec, default(spec), model)
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = loss_of(model)
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    loss = opt.step(closure)
    assert calls == [True]
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert opt.step() is None


@pytest.mark.parametrize(("spec", "variant"), variant_params(heavy=False))
def test_state_dict_resume_is_bit_identical(spec, variant):
    model_a = make_model()
    opt_a = make(spec, variant, model_a)
    train(model_a, opt_a, 3)
    buffer = io.BytesIO()
    torch.save({"model": model_a.state_dict(), "opt": opt_a.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    train(model_a, opt_a, 3, start=3)

    model_b = make_model()
    model_b.load_state_dict(saved["model"])
    opt_b = make(spec, variant, model_b)
    opt_b.load_state_dict(saved["opt"])
    train(model_b, opt_b, 3, start=3)
    assert_same(snapshot(model_a, opt_a), snapshot(model_b, opt_b))


@pytest.mark.parametrize("spec", spec_params())
def test_loading_foreign_or_mismatched_state_raises_and_keeps_state(spec):
    model = make_model()
    opt = make(spec, default(spec), model)
    train(model, opt, 1)
    before = snapshot(model, opt)
    adamw = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="param groups|Muon-family"):
        opt.load_state_dict(adamw.state_dict())
    other = nn.Sequential(
        nn.Embedding(40, 12),
        nn.Linear(12, 20),
        nn.GELU(),
        nn.Linear(20, 12, bias=False),
        nn.LayerNorm(12),
        nn.Linear(12, 40),
    )
    other_opt = make(spec, default(spec), other)
    train(other, other_opt, 1)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(other_opt.state_dict())
    assert_same(before, snapshot(model, opt))


@pytest.mark.parametrize(("spec", "variant"), variant_params(heavy=True))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_parameters_keep_fp32_state(spec, variant, dtype):
    model = make_model(dtype)
    opt = make(spec, variant, model)
    train(model, opt, 2)
    assert all(p.dtype == dtype and torch.isfinite(p).all() for p in model.parameters())
    for state in opt.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point():
                assert value.dtype == torch.float32, key
    # and the fp32 state survives a state_dict round trip
    clone = make(spec, variant, model)
    clone.load_state_dict(opt.state_dict())
    for p in model.parameters():
        for key, value in clone.state[p].items():
            assert value.dtype == opt.state[p][key].dtype


@pytest.mark.parametrize(("spec", "variant"), variant_params(heavy=True))
def test_parameters_without_gradient_are_untouched(spec, variant):
    model = make_model()
    opt = make(spec, variant, model, weight_decay=0.5, adamw_weight_decay=0.5)
    frozen = [model[1].weight, model[5].weight]
    before = [p.detach().clone() for p in frozen]
    opt.zero_grad()
    loss_of(model).backward()
    for p in frozen:
        p.grad = None
    opt.step()
    for b, p in zip(before, frozen):
        assert torch.equal(b, p)
        assert p not in opt.state or not opt.state[p]


@pytest.mark.parametrize("spec", spec_params())
def test_param_groups_are_named_and_lr_rewrites_keep_branches_in_proportion(spec):
    model = make_model()
    opt = make(spec, default(spec), model)
    assert [g["name"] for g in opt.param_groups] == ["muon", "adamw"]
    assert opt.param_groups[0]["param_names"] == ["1.weight", "3.weight"]
    # A training loop that rewrites every group's lr (litgpt) scales the AdamW branch by the same factor.
    bias = model[1].bias
    deltas = []
    for lr in (1e-3, 2e-3):
        m = make_model()
        o = make(spec, default(spec), m, adamw_lr_ratio=0.5)
        for g in o.param_groups:
            g["lr"] = lr
        before = m[1].bias.detach().clone()
        loss_of(m).backward()
        o.step()
        deltas.append((m[1].bias - before).abs().max().item())
    assert deltas[1] == pytest.approx(2 * deltas[0], rel=1e-4)
    assert bias is model[1].bias


@pytest.mark.parametrize(("spec", "variant"), variant_params(heavy=True))
def test_nonfinite_gradient_raises_before_anything_changes(spec, variant):
    model = make_model()
    opt = make(spec, variant, model)
    train(model, opt, 1)
    before = snapshot(model, opt)
    opt.zero_grad()
    loss_of(model).backward()
    model[3].weight.grad[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"3\.weight"):
        opt.step()
    assert_same(before, snapshot(model, opt))
    model[3].weight.grad[0, 0] = float("inf")
    skipping = make(spec, variant, model, nonfinite="skip")
    skipping.load_state_dict(opt.state_dict())
    before = snapshot(model, skipping)
    skipping.step()
    assert skipping.skipped_steps == 1
    assert_same(before, snapshot(model, skipping))


@pytest.mark.parametrize(("spec", "variant"), variant_params(heavy=False))
def test_zero_rank_deficient_and_degenerate_matrices_give_finite_updates(spec, variant):
    params = [
        nn.Parameter(torch.randn(*s))
        for s in [(6, 8), (1, 9), (9, 1), (0, 4), (5, 7), (3, 4, 3, 3)]
    ]
    opt = spec.build([{"params": params, "branch": "muon"}], **variant.kwargs)
    for step in range(3):
        params[0].grad = torch.zeros(6, 8)
        params[1].grad = torch.randn(1, 9)
        params[2].grad = torch.randn(9, 1)
        params[3].grad = torch.zeros(0, 4)
        params[4].grad = torch.randn(5, 1) @ torch.randn(1, 7)  # rank one
        params[5].grad = torch.randn(3, 4, 3, 3)  # conv weight, flattened to 3 x 36
        opt.step()
    assert all(torch.isfinite(p).all() for p in params)
    assert opt.state[params[5]]["step"] == 3


@pytest.mark.parametrize("spec", spec_params())
def test_sparse_and_complex_inputs_are_rejected(spec):
    with pytest.raises(ValueError, match="complex"):
        spec.build(
            [{"params": [nn.Parameter(torch.randn(3, 3, dtype=torch.complex64))], "branch": "muon"}]
        )
    emb = nn.Embedding(10, 4, sparse=True)
    lin = nn.Linear(4, 4)
    opt = spec.build(
        [{"params": [lin.weight], "branch": "muon"}, {"params": [emb.weight], "branch": "adamw"}]
    )
    lin(emb(torch.tensor([1, 2]))).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


@pytest.mark.parametrize("spec", spec_params())
def test_a_model_without_matrices_is_refused(spec):
    with pytest.raises(ValueError, match="no matrix parameters"):
        spec.build(nn.LayerNorm(8))


@pytest.mark.parametrize(("spec", "variant"), variant_params(heavy=True))
def test_capture_directions_records_only_when_asked(spec, variant):
    model = make_model()
    opt = make(spec, variant, model)
    loss_of(model).backward()
    opt.step()
    assert opt.captured_directions == {}
    opt.capture_directions([model[1].weight])
    loss_of(model).backward()
    opt.step()
    O = opt.captured_directions[model[1].weight]
    assert O.shape == (24, 12) and O.dtype == torch.float32 and torch.isfinite(O).all()


def test_plain_tensors_warn_and_vocab_hint_routes_embeddings():
    model = make_model()
    with pytest.warns(UserWarning, match="shape only"):
        opt = SPECS["muon"].build(model.parameters())
    assert len(opt.param_groups[0]["params"]) == 4  # embedding and head wrongly on Muon, as warned
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = SPECS["muon"].build(model.parameters(), vocab_size=40)
    assert [tuple(p.shape) for p in opt.param_groups[0]["params"]] == [(24, 12), (12, 24)]


@pytest.mark.parametrize("spec", spec_params())
def test_a_first_step_without_any_gradient_fails_loudly(spec):
    """Stale parameters (optimizer built before FSDP2 replaced them) must not train nothing silently."""
    model = make_model()
    opt = make(spec, default(spec), model)
    with pytest.raises(RuntimeError, match="no gradient"):
        opt.step()
    loss_of(model).backward()
    opt.step()
    opt.zero_grad()
    opt.step()  # later steps without gradients (everything frozen for a while) are allowed
