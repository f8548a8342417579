"""Tiny litgpt GPTs and helpers shared by the tensor-parallel jobs (imported by the job scripts)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from litgpt import GPT, Config
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

# GQA (8 heads, 4 query groups: T = 1, 2, 4 all divide it), a 36-wide SwiGLU, no biases; 53-token
# vocabulary and 36 MLP rows: uneven FSDP shards on 4 ranks
GQA = dict(
    name="tiny-gqa", block_size=8, vocab_size=53, padded_vocab_size=53, n_layer=2, n_head=8,
    n_query_groups=4, n_embd=32, rotary_percentage=1.0, parallel_residual=False, bias=False,
    norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=36,
)  # fmt: skip
# multi-head attention, GELU MLP, biases everywhere, parallel residual
MHA = dict(
    name="tiny-mha", block_size=8, vocab_size=53, padded_vocab_size=53, n_layer=2, n_head=4,
    n_embd=16, rotary_percentage=0.5, parallel_residual=True, bias=True,
    norm_class_name="LayerNorm", mlp_class_name="GptNeoxMLP", intermediate_size=24,
)  # fmt: skip


def gpt(config: dict[str, Any], seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(Config(**config))


def mesh(dp: int, tp: int) -> Any:
    return init_device_mesh("cpu", (dp, tp), mesh_dim_names=("data_parallel", "tensor_parallel"))


def tokens(n: int, config: dict[str, Any], seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, config["vocab_size"], (n, config["block_size"] + 1), generator=g)


def lm_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    logits = model(batch[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))


def full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()


def full_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n.replace("_forward_module.", ""): full(p) for n, p in model.named_parameters()}


def max_rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[n] - b[n]).abs().max() / b[n].abs().max().clamp_min(1e-30)) for n in b)


def full_states(
    opt: Any, named: dict[str, torch.Tensor], ref_opt: Any, ref_params: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The sharded optimizer's state (full tensors) and the one-process one's, keyed ``name:key``."""
    state, ref_state = {}, {}
    for n, p in named.items():
        for key, value in ref_opt.state[ref_params[n]].items():
            state[f"{n}:{key}"] = full(opt.state[p][key])
            ref_state[f"{n}:{key}"] = value
    return state, ref_state
