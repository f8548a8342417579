"""Tensor parallelism for litgpt's ``GPT``, and tensor × data parallelism on a 2-D device mesh.

The plan shards every block Megatron-style over the ``tensor_parallel`` mesh dimension (``T``
ranks), so each rank computes whole attention heads and a slice of the MLP, with one all-reduce
after the attention and one after the MLP:

=================================  ==========  =====================================================
module                             style       weight placement on the TP dimension
=================================  ==========  =====================================================
``attn.qkv``                       colwise     ``Shard(0)``: the rows of ``G/T`` whole query groups
``attn.proj``                      rowwise     ``Shard(1)``: the columns of the same heads
``mlp.fc`` / ``mlp.fc_1, fc_2``    colwise     ``Shard(0)``: ``intermediate_size/T`` rows
``mlp.proj``                       rowwise     ``Shard(1)``
=================================  ==========  =====================================================

Embedding, head and norms stay replicated over the TP dimension.

**The fused QKV layout.** litgpt stores ``attn.qkv`` as ``[q (n_head heads) | k (G) | v (G)]``
(``G = n_query_groups``, each head ``head_size`` rows). A contiguous ``Shard(0)`` block of that
matrix does not hold whole heads, and no DTensor placement describes "a slice of q, a slice of k,
a slice of v" for GQA. :func:`group_qkv` therefore reorders the rows once, before sharding, into
*query-group order* (the fused layout of Megatron and of litgpt before 0.5):

    [q heads of group 0 (n_head/G of them), k_0, v_0,  q heads of group 1, k_1, v_1, ...]

and registers a forward hook on ``qkv`` that turns its output back into ``[q | k | v]`` for the
rank's own groups (a local index, no communication). Every contiguous block of whole groups is then
exactly what one rank needs, so ``Shard(0)`` holds whole heads for every ``T`` dividing ``G``.
The reordering is a reparametrization: the model computes the same function, and every
Muon-family update is row-permutation equivariant (``polar(P·X) = P·polar(X)``; NorMuon's row
statistics and AdaMuon's elementwise state follow the rows). It does not depend on ``T``, so a
checkpoint of a grouped model loads into any layout that is grouped too (:func:`parallelize`
groups on every mesh, ``T = 1`` included; :func:`ungroup_qkv_rows` converts back to litgpt's order).

Each TP attention module gets a copy of the config with ``n_head/T`` and ``n_query_groups/T``,
because litgpt's forward reshapes by those counts.

Refused, before anything changes: a ``T`` that does not divide ``n_query_groups`` or
``intermediate_size`` (naming both),
latent attention, ``norm_qk_type="olmo2"`` (its norm spans all heads), mixture-of-experts MLPs.

Example:
    >>> from litgpt import GPT, Config
    >>> model = GPT(Config(n_layer=1, n_head=4, n_query_groups=2, n_embd=8, block_size=4,
    ...                    vocab_size=16, padded_vocab_size=16))
    >>> check_tensor_parallel(model.config, 2)
    >>> qkv_group_order(model.config).tolist()[:8]  # q heads 0, 1 then k_0, v_0 (head_size 2)
    [0, 1, 2, 3, 8, 9, 12, 13]
    >>> check_tensor_parallel(model.config, 4)
    Traceback (most recent call last):
    ...
    ValueError: tensor_parallel_size=4 must divide n_query_groups=2 (n_head=4): each rank computes whole query groups
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

#: the litgpt MLP attribute names, by the style each linear gets
_MLP_COLWISE = {"GptNeoxMLP": ("fc",), "LLaMAMLP": ("fc_1", "fc_2"), "GemmaMLP": ("fc_1", "fc_2")}

_GROUPED = "_lightning_muon_grouped_qkv"


def check_tensor_parallel(config: Any, tp_size: int) -> None:
    """Raise ``ValueError`` when litgpt ``config`` cannot be split over ``tp_size`` ranks exactly."""
    if not isinstance(tp_size, int) or tp_size < 1:
        raise ValueError(f"tensor_parallel_size={tp_size!r} must be a positive integer")
    if getattr(config, "latent_attention", None):
        raise ValueError("tensor parallelism of litgpt's latent attention is not supported")
    if tp_size > 1 and getattr(config, "norm_qk", False) and config.norm_qk_type == "olmo2":
        raise ValueError(
            "norm_qk_type='olmo2' normalizes over all heads at once; tensor parallelism would need "
            "it sharded: not supported (use norm_qk_type='default' or tensor_parallel_size=1)"
        )
    if config.mlp_class_name not in _MLP_COLWISE:
        raise ValueError(
            f"mlp_class_name={config.mlp_class_name!r} is not supported by the tensor-parallel plan "
            f"(supported: {', '.join(sorted(_MLP_COLWISE))})"
        )
    if config.n_query_groups % tp_size:
        raise ValueError(
            f"tensor_parallel_size={tp_size} must divide n_query_groups={config.n_query_groups} "
            f"(n_head={config.n_head}): each rank computes whole query groups"
        )
    if config.intermediate_size % tp_size:
        raise ValueError(
            f"tensor_parallel_size={tp_size} must divide intermediate_size={config.intermediate_size}: "
            "the rowwise mlp.proj infers its input width from equal shards"
        )


def qkv_group_order(config: Any) -> torch.Tensor:
    """Row ``i`` of the grouped ``qkv`` weight is row ``order[i]`` of litgpt's ``[q | k | v]`` weight."""
    H, G, hs = config.n_head, config.n_query_groups, config.head_size
    per = H // G
    heads = []
    for g in range(G):
        heads += [g * per + j for j in range(per)] + [H + g, H + G + g]
    return (torch.tensor(heads)[:, None] * hs + torch.arange(hs)).reshape(-1)


def _permute_rows(linear: nn.Linear, order: torch.Tensor) -> None:
    with torch.no_grad():
        for p in (linear.weight, linear.bias):
            if p is not None:
                p.copy_(p.index_select(0, order.to(p.device)))


def _split_grouped(
    per: int, hs: int, module: nn.Module, args: Any, out: torch.Tensor
) -> torch.Tensor:
    """Forward hook of a grouped ``qkv``: ``[per q, k, v] × groups`` → ``[q | k | v]`` (local groups)."""
    *lead, width = out.shape
    groups = width // ((per + 2) * hs)
    x = out.view(*lead, groups, per + 2, hs)
    q = x[..., :per, :].reshape(*lead, groups * per * hs)
    k = x[..., per, :].reshape(*lead, groups * hs)
    v = x[..., per + 1, :].reshape(*lead, groups * hs)
    return torch.cat((q, k, v), dim=-1)


def _hook_split(attn: nn.Module, config: Any) -> None:
    """(Re-)register the ``[q | k | v]`` hook as ``qkv``'s last forward hook."""
    handle = getattr(attn, _GROUPED, None)
    if handle is not None:
        handle.remove()
    per, hs = config.n_head // config.n_query_groups, config.head_size
    hook = lambda m, a, o: _split_grouped(per, hs, m, a, o)  # noqa: E731
    setattr(attn, _GROUPED, attn.qkv.register_forward_hook(hook))


def group_qkv(model: nn.Module) -> nn.Module:
    """Reorder every block's ``attn.qkv`` rows into query-group order (in place; once).

    The model computes the same function afterwards (a forward hook restores litgpt's
    ``[q | k | v]`` order on the output). Call it on plain (unsharded) parameters.
    """
    config = model.config
    check_tensor_parallel(config, 1)
    for block in model.transformer.h:
        if getattr(block.attn, _GROUPED, None) is None:
            _permute_rows(block.attn.qkv, qkv_group_order(config))
            _hook_split(block.attn, config)
    return model


def ungroup_qkv_rows(weight: torch.Tensor, config: Any) -> torch.Tensor:
    """A grouped ``qkv`` weight (or bias, or a state tensor of the same shape) in litgpt's row order."""
    order = qkv_group_order(config)
    return weight.index_select(0, torch.argsort(order).to(weight.device))


def block_plan(block: nn.Module) -> dict[str, Any]:
    """The ``parallelize_module`` plan of one litgpt ``Block`` (names relative to the block)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    mlp = type(block.mlp).__name__
    if mlp not in _MLP_COLWISE:
        raise ValueError(f"MLP class {mlp!r} is not supported by the tensor-parallel plan")
    plan: dict[str, Any] = {"attn.qkv": ColwiseParallel(), "attn.proj": RowwiseParallel()}
    plan.update({f"mlp.{name}": ColwiseParallel() for name in _MLP_COLWISE[mlp]})
    plan["mlp.proj"] = RowwiseParallel()
    return plan


def apply_tensor_parallel(model: nn.Module, tp_mesh: Any) -> nn.Module:
    """Group ``qkv`` (:func:`group_qkv`) and shard every block over the 1-D ``tp_mesh`` (in place)."""
    from torch.distributed.tensor.parallel import parallelize_module

    T = tp_mesh.size()
    check_tensor_parallel(model.config, T)
    group_qkv(model)
    if T == 1:
        return model
    local = copy.copy(model.config)  # litgpt's attention reshapes by these counts
    local.n_head, local.n_query_groups = model.config.n_head // T, model.config.n_query_groups // T
    for block in model.transformer.h:
        parallelize_module(block, tp_mesh, block_plan(block))
        _hook_split(block.attn, model.config)  # after the plan's own hook: it sees local outputs
        block.attn.config = local
    return model


def parallelize(model: nn.Module, device_mesh: Any) -> nn.Module:
    """Tensor parallelism over ``device_mesh["tensor_parallel"]``, then FSDP2 over ``["data_parallel"]``.

    What a Lightning ``ModelParallelStrategy``'s ``configure_model`` (``self.device_mesh``) or a
    Fabric ``parallelize_fn`` does: :func:`apply_tensor_parallel`, then ``fully_shard`` of every
    block and of the root module (each mesh dimension of size 1 is skipped; ``qkv`` is grouped
    on every mesh, so checkpoints move between layouts). Returns ``model``.
    """
    from torch.distributed.fsdp import fully_shard

    apply_tensor_parallel(model, device_mesh["tensor_parallel"])
    dp_mesh = device_mesh["data_parallel"]
    if dp_mesh.size() > 1:
        for block in model.transformer.h:
            fully_shard(block, mesh=dp_mesh)
        fully_shard(model, mesh=dp_mesh)
    return model
