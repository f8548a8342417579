"""Structured matrices (``structure=``): expert stacks, fused QKV and per-head blocks.

The oracle slices every weight into its blocks by hand and runs the numpy-free float64 reference
of ``tests/optim/reference.py`` on each block as a matrix of its own (exact polar factor); it
shares no code with the package's blocking.
"""

import copy

import pytest
import torch

from lightning_muon.engine.blocks import Blocking, Blocks
from lightning_muon.engine.buckets import matrix_buckets
from lightning_muon.optim.registry import SPECS
from lightning_muon.optim.structure import resolve

from ..optim_specs import spec_params
from .reference import ORACLES, Reference
from .test_oracles import exact

STEPS = 3
N_HEAD, N_GROUPS, HEAD_SIZE, WIDTH = 4, 2, 3, 10  # GQA: 4 query heads share 2 key/value heads
QKV_ROWS = (N_HEAD + 2 * N_GROUPS) * HEAD_SIZE
ATTENTION = {"n_head": N_HEAD, "n_query_groups": N_GROUPS}
SHAPES = {"moe.experts": (3, 5, 7), "attn.qkv": (QKV_ROWS, WIDTH), "mlp.fc": (6, WIDTH)}
STRUCTURES = {
    "flatten": "flatten",
    "experts-qkv": {"moe.*": "experts", "*.qkv": {"split": "qkv", **ATTENTION}},
    "experts-heads": {"moe.*": "experts", "*.qkv": {"split": "heads", **ATTENTION, "head_size": 3}},
}


def hand_blocks(name, structure):
    """Row ranges ``[(a, b), ...]`` of each weight's matrix view, written out for these shapes."""
    if structure == "flatten" or name == "mlp.fc":
        return [(0, SHAPES[name][0])]
    if name == "moe.experts":  # (3, 5, 7): rows of the (15, 7) view, 5 per expert
        return [(5 * e, 5 * e + 5) for e in range(3)]
    if structure == "experts-qkv":
        return [(0, 12), (12, 18), (18, 24)]
    return [(3 * h, 3 * h + 3) for h in range(8)]


def matrix_view(t, name, structure):
    if name == "moe.experts" and structure != "flatten":
        return t.reshape(-1, t.shape[-1])
    return t.reshape(t.shape[0], -1)


def build(spec, params, structure, **kwargs):
    names = list(SHAPES)
    group = {"params": params, "branch": "muon", "param_names": names}
    return spec.build([group], structure=STRUCTURES[structure], **kwargs)


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("spec", spec_params())
def test_blocks_match_per_block_float64_oracle(spec, structure):
    check_against_oracle(spec, structure)


@pytest.mark.parametrize("spec", spec_params())
def test_blocks_split_across_small_buckets_match_the_oracle(spec):
    """A bucket limit of 2 head matrices puts one weight's heads (and q vs k/v) in several buckets."""
    check_against_oracle(spec, "experts-heads", max_bucket_numel=2 * 3 * WIDTH)
    check_against_oracle(spec, "experts-qkv", max_bucket_numel=1)


def check_against_oracle(spec, structure, **extra):
    kwargs = {**exact(spec, {}), **extra}
    generator = torch.Generator().manual_seed(0)
    weights = {
        n: torch.randn(s, dtype=torch.float64, generator=generator) for n, s in SHAPES.items()
    }
    params = [torch.nn.Parameter(w.clone()) for w in weights.values()]
    opt = build(spec, params, structure, **kwargs)
    hp = spec.hyperparameters(**kwargs)
    refs = {
        n: [
            Reference(matrix_view(w, n, structure)[a:b], **hp) for a, b in hand_blocks(n, structure)
        ]
        for n, w in weights.items()
    }
    for _ in range(STEPS):
        grads = {
            n: torch.randn(s, dtype=torch.float64, generator=generator) for n, s in SHAPES.items()
        }
        for p, g in zip(params, grads.values(), strict=True):
            p.grad = g.clone()
        opt.step()
        for n, g in grads.items():
            G = matrix_view(g, n, structure)
            for r, (a, b) in zip(refs[n], hand_blocks(n, structure), strict=True):
                ORACLES[spec.name](r, G[a:b])
    for p, n in zip(params, SHAPES, strict=True):
        expected = torch.cat([r.W for r in refs[n]]).reshape(p.shape)
        # NSR/VS: an elementwise ratio of the momentum makes small blocks' polar factors
        # ill-conditioned (exact to about eps·cond, times the lr), as in test_oracles
        tol = 1e-5 * hp["lr"] if spec.name in ("muon_nsr", "muon_vs") else 1e-10
        torch.testing.assert_close(p.detach(), expected, atol=tol, rtol=tol)


def test_blocks_of_one_shape_share_a_bucket():
    """Heads of two weights and a plain matrix of the head shape: one bucket of 17 matrices."""
    a, b = torch.nn.Parameter(torch.randn(24, 10)), torch.nn.Parameter(torch.randn(24, 10))
    c = torch.nn.Parameter(torch.randn(3, 10))
    for p in (a, b, c):
        p.grad = torch.zeros_like(p)
    heads = Blocking((3,) * 8, 10)
    buckets = list(matrix_buckets([a, c, b], 1 << 20, {a: heads, b: heads}))
    assert [shape for shape, _ in buckets] == [(3, 10)]
    items = buckets[0][1]
    assert [isinstance(i, Blocks) for i in items] == [True, False, True]
    assert sum(i.count if isinstance(i, Blocks) else 1 for i in items) == 17
    # a small bucket limit splits one weight's heads across buckets; each block is still updated once
    small = list(matrix_buckets([a], 3 * 10 * 3, {a: heads}))
    assert [sum(i.count for i in items) for _, items in small] == [3, 3, 2]


def test_state_layout_and_round_trip():
    spec = SPECS["normuon"]
    generator = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in SHAPES.values()]
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt, other = build(spec, params, "experts-heads"), build(spec, twin, "experts-heads")
    grads = [[torch.randn(s, generator=generator) for s in SHAPES.values()] for _ in range(4)]
    for step in range(2):
        for p, q, g in zip(params, twin, grads[step], strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        other.step()
    state = opt.state[params[0]]  # experts (3, 5, 7): per-expert rows and steps
    assert state["step"].tolist() == [2.0, 2.0, 2.0]
    assert state["momentum_buffer"].shape == (3, 5, 7)
    assert state["row_second_moment"].shape == (3, 5, 1)  # per expert, per row
    assert opt.state[params[1]]["step"].shape == (8,)  # one counter per head
    saved = copy.deepcopy(opt.state_dict())
    resumed = build(spec, params, "experts-heads")
    resumed.load_state_dict(saved)
    for step in range(2, 4):
        for p, q, g in zip(params, twin, grads[step], strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        resumed.step()
        other.step()
    for p, q in zip(params, twin, strict=True):
        torch.testing.assert_close(p, q, atol=0, rtol=0)


@pytest.mark.parametrize("loading", ["flatten", "experts-qkv"])
def test_state_of_another_structure_is_refused(loading):
    spec = SPECS["normuon"]
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES.values()]
    opt = build(spec, params, "experts-heads")
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    fresh = build(spec, params, loading)
    name = "moe.experts" if loading == "flatten" else "attn.qkv"
    with pytest.raises(ValueError, match=rf"updates {name} with structure .* would be misread"):
        fresh.load_state_dict(saved)
    assert not fresh.state  # nothing changed


BAD = [
    ("attn.qkv", (25, 10), {"split": "heads", **ATTENTION}, "25 rows are not n_head"),
    ("attn.qkv", (24, 10), {"split": "qkv", **ATTENTION, "head_size": 4}, "head_size 4"),
    ("attn.qkv", (24, 2, 5), {"split": "qkv", **ATTENTION}, "splits a 2-D weight"),
    ("mlp.fc", (6, 10), "experts", "at least 3 dimensions"),
    ("mlp.fc", (6, 10), {"split": "rows", "sizes": [4, 3]}, "add up to 7 rows, not 6"),
]


@pytest.mark.parametrize(("name", "shape", "structure", "match"), BAD)
def test_a_split_that_does_not_fit_is_refused_at_construction(name, shape, structure, match):
    p = torch.nn.Parameter(torch.randn(shape))
    group = {"params": [p], "branch": "muon", "param_names": [name]}
    with pytest.raises(
        ValueError, match=rf"NorMuon: structure .* does not fit {name} of shape .*{match}"
    ):
        SPECS["normuon"].build([group], structure={name: structure})


@pytest.mark.parametrize(
    "structure",
    [
        "qkv",
        "heads",
        "blocks",
        {"split": "heads", "n_head": 6, "n_query_groups": 4},
        {"split": "rows"},
    ],
)
def test_malformed_structures_are_refused(structure):
    p = torch.nn.Parameter(torch.randn(24, 10))
    with pytest.raises(ValueError, match="Invalid structure"):
        SPECS["muon"].build([{"params": [p], "branch": "muon"}], structure=structure)


def test_group_key_overrides_and_patterns():
    """A group's own ``structure`` wins over the constructor's; patterns pick parameters by name."""
    a, b = torch.nn.Parameter(torch.randn(2, 3, 4)), torch.nn.Parameter(torch.randn(2, 3, 4))
    groups = [
        {"params": [a], "branch": "muon", "param_names": ["x.experts"], "structure": "experts"},
        {"params": [b], "branch": "muon", "param_names": ["y.w"]},
    ]
    opt = SPECS["normuon"].build(groups)
    for p in (a, b):
        p.grad = torch.randn_like(p)
    opt.step()
    assert opt.state[a]["row_second_moment"].shape == (2, 3, 1)  # per expert
    assert opt.state[b]["row_second_moment"].shape == (2, 1)
    assert resolve({"*.experts": "experts"}, "y.w", (2, 3, 4)) is None


def test_skipped_step_leaves_blocks_untouched():
    p = torch.nn.Parameter(torch.randn(24, 10))
    group = {"params": [p], "branch": "muon", "param_names": ["attn.qkv"]}
    opt = SPECS["muon"].build([group], structure={"split": "heads", **ATTENTION}, nonfinite="skip")
    p.grad = torch.randn_like(p)
    opt.step()
    before = copy.deepcopy(opt.state[p]), p.detach().clone()
    p.grad = torch.full_like(p, float("nan"))
    opt.step()
    assert opt.skipped_steps == 1
    torch.testing.assert_close(opt.state[p]["step"], before[0]["step"])
    torch.testing.assert_close(p.detach(), before[1])


def test_captured_direction_of_blocks_is_the_whole_matrix():
    p = torch.nn.Parameter(torch.randn(3, 4, 5, dtype=torch.float64))
    opt = SPECS["muon"].build(
        [{"params": [p], "branch": "muon"}], structure="experts", orthogonalizer="svd"
    )
    opt.capture_directions([p])
    p.grad = torch.randn_like(p)
    opt.step()
    O = opt.captured_directions[p]
    assert O.shape == (12, 5)
    for e in range(3):  # each expert's block is orthogonal on its own: rows orthonormal (4 <= 5)
        block = O[4 * e : 4 * e + 4].double()
        torch.testing.assert_close(
            block @ block.T, torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=0
        )


def test_state_saved_before_the_key_existed_loads_as_flatten():
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES.values()]
    opt = build(SPECS["muon"], params, "flatten")
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    old = copy.deepcopy(opt.state_dict())
    for group in old["param_groups"]:
        del group["structure"]
    resumed = build(SPECS["muon"], params, "flatten")
    resumed.load_state_dict(old)
    assert resumed.param_groups[0]["structure"] == "flatten"
    with pytest.raises(ValueError, match="would be misread"):
        build(SPECS["muon"], params, "experts-qkv").load_state_dict(old)


def test_structure_from_the_command_line():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(SPECS["normuon"].cls, "opt", skip={"params"})
    value = '{"*qkv.weight": {"split": "heads", "n_head": 4, "n_query_groups": 2}, "*experts": "experts"}'
    config = parser.parse_args(["--opt.structure", value]).opt
    assert config.structure == {
        "*qkv.weight": {"split": "heads", "n_head": 4, "n_query_groups": 2},
        "*experts": "experts",
    }
    assert parser.parse_args(["--opt.structure", "experts"]).opt.structure == "experts"
    assert parser.get_defaults().opt.structure == "flatten"


def test_patterns_that_match_nothing_warn():
    p = torch.nn.Parameter(torch.randn(3, 4, 5))
    with pytest.warns(UserWarning, match=r"structure patterns \['\*experts'\] match no parameter"):
        SPECS["muon"].build([p], structure={"*experts": "experts"}, vocab_size=100)
