"""Routing: module structure, names, shapes and explicit groups."""

import warnings

import pytest
import torch
from torch import nn

import lightning_muon as lm
from lightning_muon.optim.routing import route_parameters


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(50, 16)
        self.block = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
        self.norm = nn.LayerNorm(16)
        self.proj = nn.Linear(16, 50, bias=False)
        self.proj.weight = self.wte.weight
        self.scale = nn.Parameter(torch.ones(()))


def branches(groups):
    return {name: g["branch"] for g in groups for name in g["param_names"]}


def test_module_routing_by_type_structure_and_ties():
    groups, table = route_parameters(TiedLM())
    assert branches(groups) == {
        "wte.weight": "adamw",
        "block.0.weight": "muon",
        "block.0.bias": "adamw",
        "block.2.weight": "muon",
        "block.2.bias": "adamw",
        "norm.weight": "adamw",
        "norm.bias": "adamw",
        "scale": "adamw",
    }
    assert "tied" in next(e.reason for e in table.entries if e.name == "wte.weight")
    text = str(table)
    assert "block.0.weight" in text and "2 parameters on the muon branch, 6 on adamw" in text


def test_untied_head_by_vocabulary_and_by_name():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(30, 8)
            self.hidden = nn.Linear(8, 8)
            self.out = nn.Linear(8, 30)

    assert branches(route_parameters(LM())[0])["out.weight"] == "adamw"

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(8, 8)
            self.classifier = nn.Linear(8, 3)
            self.extra = nn.Linear(8, 8)

    routes = branches(route_parameters(Classifier())[0])
    assert routes["classifier.weight"] == "adamw" and routes["extra.weight"] == "muon"


def test_convnet_first_conv_and_last_linear_go_to_adamw():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 8, 3),
        nn.Flatten(),
        nn.Linear(8, 16),
        nn.Linear(16, 10),
    )
    routes = branches(route_parameters(net)[0])
    assert routes["0.weight"] == "adamw"  # input layer
    assert routes["2.weight"] == "muon"  # conv, flattened
    assert routes["4.weight"] == "muon"
    assert routes["5.weight"] == "adamw"  # output layer


def test_named_parameters_route_by_name_and_ties():
    model = TiedLM()
    pairs = list(model.named_parameters(remove_duplicate=False))
    routes = branches(route_parameters(pairs)[0])
    assert routes["wte.weight"] == "adamw" and routes["block.0.weight"] == "muon"
    hf_like = [("model.embed_tokens.weight", torch.zeros(50, 8)), ("model.layers.0.mlp.up_proj.weight", torch.zeros(16, 8)),
               ("model.norm.weight", torch.zeros(8)), ("lm_head.weight", torch.zeros(50, 8)),
               ("transformer.h.0.ln_1.weight", torch.zeros(8)), ("transformer.wpe.weight", torch.zeros(64, 8))]  # fmt: skip
    routes = branches(route_parameters(hf_like)[0])
    assert routes == {
        "model.embed_tokens.weight": "adamw",
        "model.layers.0.mlp.up_proj.weight": "muon",
        "model.norm.weight": "adamw",
        "lm_head.weight": "adamw",
        "transformer.h.0.ln_1.weight": "adamw",
        "transformer.wpe.weight": "adamw",
    }


def test_explicit_groups_and_kj_style_flags():
    a, b, c = (
        nn.Parameter(torch.randn(4, 4)),
        nn.Parameter(torch.randn(4)),
        nn.Parameter(torch.randn(6, 4)),
    )
    opt = lm.Muon(
        [{"params": [a], "branch": "muon", "lr": 0.05}, {"params": [b, c], "use_muon": False}]
    )
    assert [(g["branch"], g["lr"]) for g in opt.param_groups] == [("muon", 0.05), ("adamw", 0.01)]
    with pytest.raises(ValueError, match="branch"):
        lm.Muon([{"params": [a], "branch": "sgd"}])
    with pytest.warns(UserWarning, match="shape only"):
        groups, _ = route_parameters([{"params": [a, b]}])
    assert [g["branch"] for g in groups] == ["muon", "adamw"]


def test_bad_params_arguments():
    with pytest.raises(TypeError, match="iterable"):
        lm.Muon(torch.randn(3, 3))
    with pytest.raises(ValueError, match="empty"):
        lm.Muon([])
    with pytest.raises(TypeError, match="mix"):
        lm.Muon([torch.randn(3, 3), ("w", torch.randn(3, 3))])


def test_param_groups_helper_feeds_any_optimizer():
    groups = lm.param_groups(TiedLM())
    opt = torch.optim.AdamW(groups, lr=1e-3)  # extra keys are carried along
    assert [g["branch"] for g in opt.param_groups] == ["muon", "adamw"]
    muon = lm.NorMuon(groups)
    assert muon.routing.names("muon") == ["block.0.weight", "block.2.weight"]


def test_litgpt_gpt_routing():
    litgpt = pytest.importorskip("litgpt")
    config = litgpt.Config(
        n_layer=2, n_embd=32, n_head=4, block_size=16, padded_vocab_size=64, vocab_size=64
    )
    model = litgpt.GPT(config)
    routing = lm.Muon(model).routing
    assert routing.branch_of("transformer.wte.weight") == "adamw"
    assert routing.branch_of("lm_head.weight") == "adamw"
    muon = routing.names("muon")
    assert muon and all(".h." in n and n.endswith("weight") for n in muon)
    assert len(muon) == 2 * 4  # qkv, proj, fc, mlp proj per layer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        by_shape = lm.Muon(model.parameters(), vocab_size=64).routing
    assert len(by_shape.names("muon")) == len(muon)


def test_position_embeddings_do_not_make_square_linears_heads():
    class GPT2Medium(nn.Module):  # position table as wide as the model: 16 == 16
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(50, 16)
            self.wpe = nn.Embedding(16, 16)
            self.c_proj = nn.Linear(16, 16)
            self.lm_head = nn.Linear(16, 50)

    routes = branches(route_parameters(GPT2Medium())[0])
    assert routes["c_proj.weight"] == "muon" and routes["lm_head.weight"] == "adamw"
    assert routes["wpe.weight"] == "adamw"


def test_free_parameters_of_custom_modules_are_routed_by_name():
    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embedding = nn.Parameter(torch.zeros(1, 5, 8))
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
            self.mixer = nn.Parameter(torch.zeros(8, 8))
            self.mlp = nn.Linear(8, 8)
            self.head = nn.Linear(8, 3)

    routes = branches(route_parameters(ViT())[0])
    assert routes == {
        "pos_embedding": "adamw",
        "cls_token": "adamw",
        "mixer": "muon",
        "mlp.weight": "muon",
        "mlp.bias": "adamw",
        "head.weight": "adamw",
        "head.bias": "adamw",
    }


def test_vectors_in_an_explicit_muon_group_are_refused_at_construction():
    with pytest.raises(ValueError, match=r"not a matrix"):
        lm.Muon(
            [
                {
                    "params": [nn.Parameter(torch.zeros(4, 4)), nn.Parameter(torch.zeros(4))],
                    "branch": "muon",
                }
            ]
        )


def test_an_mlp_as_wide_as_the_vocabulary_is_not_a_head():
    litgpt = pytest.importorskip("litgpt")
    config = litgpt.Config(n_layer=1, n_embd=64, n_head=4, block_size=16, padded_vocab_size=256, vocab_size=256,
                           mlp_class_name="LLaMAMLP", intermediate_size=256, bias=False)  # fmt: skip
    routing = lm.Muon(litgpt.GPT(config)).routing
    assert routing.branch_of("transformer.h.0.mlp.fc_1.weight") == "muon"
    assert routing.branch_of("lm_head.weight") == "adamw"


@pytest.mark.parametrize("name", sorted(lm.OPTIMIZERS))
def test_zero_gradients_of_large_matrices_stay_finite(name):
    w = nn.Parameter(torch.randn(64, 96))
    opt = lm.OPTIMIZERS[name]([{"params": [w], "branch": "muon"}])
    for _ in range(2):
        w.grad = torch.zeros_like(w)
        opt.step()
    assert torch.isfinite(w).all()
