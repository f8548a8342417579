"""The ``structure`` map of a litgpt model: its fused ``attn.qkv`` weights as per-head or q/k/v blocks.

litgpt's ``CausalSelfAttention`` (litgpt 0.5) holds the three projections in one ``nn.Linear``
``attn.qkv`` of ``(n_head + 2·n_query_groups)·head_size`` rows: all query heads, then all key
heads, then all value heads, each ``head_size`` rows (``forward`` splits the output into
``(n_head·hs, n_query_groups·hs, n_query_groups·hs)`` and views each part as heads). Hidden MLP
weights and ``attn.proj`` stay one matrix each.

Example:
    >>> from litgpt import Config
    >>> config = Config(n_layer=1, n_head=4, n_query_groups=2, n_embd=32, block_size=8, padded_vocab_size=64)
    >>> attention_structure(config)
    {'*attn.qkv.weight': {'split': 'heads', 'n_head': 4, 'n_query_groups': 2, 'head_size': 8}}
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .tensor_parallel import _GROUPED as GROUPED_MARK  # set by group_qkv on a regrouped attention

SPLITS = ("heads", "qkv")


def attention_structure(model_or_config: Any, split: str = "heads") -> dict[str, dict[str, Any]]:
    """``structure=`` for a litgpt ``GPT`` (or its ``Config``): every ``attn.qkv.weight`` split
    into ``"heads"`` (one matrix per query, key and value head) or ``"qkv"`` (three matrices).

    The pattern ``*attn.qkv.weight`` also matches the names under FSDP or ``torch.compile``
    wrappers (``_forward_module.``, ``_orig_mod.``). The optimizer checks at construction that
    every matched weight has ``(n_head + 2·n_query_groups)·head_size`` rows.

    A model whose ``qkv`` rows were regrouped for tensor parallelism
    (:func:`~lightning_muon.litgpt.tensor_parallel.group_qkv`) still holds whole heads of
    ``head_size`` rows, so ``"heads"`` fits it; ``"qkv"`` is refused.

    Raises:
        ValueError: an unknown ``split``, ``"qkv"`` on regrouped rows, or a model with multi-head latent attention (no fused
            ``qkv`` weight).
    """
    if split not in SPLITS:
        raise ValueError(f"Invalid split: {split!r} (expected one of {', '.join(SPLITS)})")
    config = getattr(model_or_config, "config", model_or_config)
    grouped = isinstance(model_or_config, nn.Module) and any(
        getattr(m, GROUPED_MARK, None) is not None for m in model_or_config.modules()
    )
    if grouped and split == "qkv":  # heads are only reordered: "heads" still cuts whole heads
        raise ValueError(
            "attention_structure: this model's attn.qkv rows are in query-group order "
            "(lightning_muon.litgpt.tensor_parallel.group_qkv), not [q | k | v]; use split='heads'"
        )
    if getattr(config, "latent_attention", None):
        raise ValueError(
            "attention_structure: this litgpt config uses multi-head latent attention, which has no "
            "fused attn.qkv weight"
        )
    spec = {
        "split": split,
        "n_head": int(config.n_head),
        "n_query_groups": int(config.n_query_groups),
        "head_size": int(config.head_size),
    }
    return {"*attn.qkv.weight": spec}
