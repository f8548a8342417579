"""The litgpt tensor-parallel plan on one process: the qkv regrouping and the refusals."""

from __future__ import annotations

import pytest
import torch
from litgpt import GPT, Config

from lightning_muon.litgpt.tensor_parallel import (
    apply_tensor_parallel,
    block_plan,
    check_tensor_parallel,
    group_qkv,
    qkv_group_order,
    ungroup_qkv_rows,
)

BASE = dict(block_size=8, vocab_size=32, padded_vocab_size=32, n_layer=2, n_embd=32, bias=True)


def make(**kwargs) -> GPT:
    torch.manual_seed(0)
    return GPT(Config(**{**BASE, **kwargs}))


@pytest.mark.parametrize(
    "heads", [dict(n_head=8, n_query_groups=2), dict(n_head=4), dict(n_head=4, n_query_groups=1)]
)
def test_grouping_keeps_the_function_and_inverts(heads: dict) -> None:
    model = make(mlp_class_name="LLaMAMLP", intermediate_size=24, **heads)
    x = torch.randint(0, 32, (2, 8))
    before = model(x)
    original = model.transformer.h[0].attn.qkv.weight.detach().clone()
    group_qkv(model)
    group_qkv(model)  # once only
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-6)
    grouped = model.transformer.h[0].attn.qkv.weight.detach()
    assert not torch.equal(grouped, original) or heads.get("n_query_groups") == 1
    assert torch.equal(ungroup_qkv_rows(grouped, model.config), original)


def test_group_order_puts_each_query_group_together() -> None:
    config = make(n_head=4, n_query_groups=2).config  # head_size 8
    heads = qkv_group_order(config).view(-1, config.head_size)[:, 0] // config.head_size
    # group 0: q heads 0, 1, k_0 (head 4), v_0 (head 6); group 1: q 2, 3, k_1 (5), v_1 (7)
    assert heads.tolist() == [0, 1, 4, 6, 2, 3, 5, 7]


class _Mesh:
    def __init__(self, n: int) -> None:
        self.n = n

    def size(self) -> int:
        return self.n


@pytest.mark.parametrize(
    ("kwargs", "tp", "message"),
    [
        (
            dict(n_head=4, n_query_groups=2),
            4,
            "tensor_parallel_size=4 must divide n_query_groups=2",
        ),
        (dict(n_head=4, intermediate_size=30), 4, "must divide intermediate_size=30"),
        (dict(n_head=4, norm_qk=True, norm_qk_type="olmo2"), 2, "olmo2"),
        (dict(n_head=4), 0, "tensor_parallel_size=0"),
    ],
)
def test_refusals_name_the_values_and_change_nothing(kwargs: dict, tp: int, message: str) -> None:
    model = make(**kwargs)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=message):
        apply_tensor_parallel(model, _Mesh(tp))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_mixture_of_experts_is_refused() -> None:
    config = Config(**BASE, n_head=4, mlp_class_name="LLaMAMoE", n_expert=2, n_expert_per_token=1,
                    intermediate_size=16, moe_intermediate_size=16)  # fmt: skip
    with pytest.raises(ValueError, match="mlp_class_name='LLaMAMoE'"):
        check_tensor_parallel(config, 2)


def test_block_plan_names_litgpt_attributes() -> None:
    llama = make(n_head=4, mlp_class_name="LLaMAMLP", intermediate_size=24).transformer.h[0]
    neox = make(n_head=4, mlp_class_name="GptNeoxMLP", intermediate_size=24).transformer.h[0]
    styles = lambda plan: {k: type(v).__name__ for k, v in plan.items()}  # noqa: E731
    assert styles(block_plan(llama)) == {
        "attn.qkv": "ColwiseParallel", "attn.proj": "RowwiseParallel", "mlp.fc_1": "ColwiseParallel",
        "mlp.fc_2": "ColwiseParallel", "mlp.proj": "RowwiseParallel",
    }  # fmt: skip
    assert styles(block_plan(neox))["mlp.fc"] == "ColwiseParallel"
    for name in block_plan(llama):
        assert llama.get_submodule(name) is not None
