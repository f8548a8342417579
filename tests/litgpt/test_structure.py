"""``attention_structure`` on real litgpt GPTs: per-head and q/k/v blocks against a per-block oracle."""

from __future__ import annotations

import pytest
import torch
from litgpt import GPT, Config

from lightning_muon import Muon
from lightning_muon.litgpt import attention_structure
from lightning_muon.litgpt.tensor_parallel import group_qkv

from ..optim.reference import ORACLES, Reference

BASE = dict(block_size=8, vocab_size=32, padded_vocab_size=32, n_layer=2, n_embd=24, bias=False)


def make(**kwargs) -> GPT:
    torch.manual_seed(0)
    return GPT(Config(**{**BASE, **kwargs})).double()


def head_rows(config, split):
    """Row ranges of litgpt's ``[q | k | v]`` qkv weight, written from the Config by hand."""
    H, G, hs = config.n_head, config.n_query_groups, config.head_size
    if split == "qkv":
        return [(0, H * hs), (H * hs, (H + G) * hs), ((H + G) * hs, (H + 2 * G) * hs)]
    return [(i * hs, (i + 1) * hs) for i in range(H + 2 * G)]


@pytest.mark.parametrize("split", ["heads", "qkv"])
@pytest.mark.parametrize("heads", [dict(n_head=4, n_query_groups=2), dict(n_head=3)])
def test_qkv_blocks_of_a_litgpt_gpt_match_the_per_block_oracle(split, heads):
    model = make(**heads)
    config = model.config
    opt = Muon(model, structure=attention_structure(model, split), orthogonalizer="svd")
    hp = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    qkv = {n: p for n, p in model.named_parameters() if n.endswith("attn.qkv.weight")}
    assert len(qkv) == 2 and all(opt.routing.branch_of(n) == "muon" for n in qkv)
    rows = head_rows(config, split)
    refs = {n: [Reference(p.detach()[a:b], **hp) for a, b in rows] for n, p in qkv.items()}
    x = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        opt.zero_grad()
        model(x).logsumexp(-1).mean().backward()
        for n, p in qkv.items():
            for r, (a, b) in zip(refs[n], rows, strict=True):
                ORACLES["muon"](r, p.grad[a:b].double())
        opt.step()
    for n, p in qkv.items():
        torch.testing.assert_close(
            p.detach(), torch.cat([r.W for r in refs[n]]), atol=1e-10, rtol=1e-10
        )
        assert opt.state[p]["step"].shape == (len(rows),)


def test_a_config_of_another_model_is_refused_naming_the_weight():
    model = make(n_head=4, n_query_groups=2)
    wrong = Config(**{**BASE, "n_embd": 24, "n_head": 6, "n_query_groups": 6})
    with pytest.raises(
        ValueError, match=r"does not fit transformer\.h\.0\.attn\.qkv\.weight of shape \(48, 24\)"
    ):
        Muon(model, structure=attention_structure(wrong))


def test_regrouped_rows_take_heads_not_qkv():
    model = group_qkv(make(n_head=4, n_query_groups=2))
    assert attention_structure(model)["*attn.qkv.weight"]["split"] == "heads"
    with pytest.raises(ValueError, match="query-group order"):
        attention_structure(model, "qkv")
