"""Parameter shape sets of real models for the step benchmarks.

A :class:`ShapeSet` holds the *hidden* matrices a Muon-family optimizer orthogonalizes and the
*auxiliary* tensors (embeddings, heads, norms, biases) that go to the AdamW branch, both as
``(name, shape)`` pairs in the layout of ``nn.Linear`` weights ``(out_features, in_features)``.

Sets:

* ``small``: litgpt ``pythia-14m`` (``Config.from_name("pythia-14m")``: 6 layers, width 128,
  MLP 512, padded vocabulary 50304, untied head). The shapes are written out here so the
  benchmark needs no litgpt; a test checks them against litgpt's config.
* ``medium``: one GPT-2-small block (width 768, MLP 3072; Hugging Face ``Conv1D`` weights
  transposed to ``nn.Linear`` layout).
* ``large``: the whole GPT-2-small (12 blocks; token and position embeddings, the head tied to
  the token embedding).

Newton–Schulz cost of an ``m × n`` matrix (``m ≤ n`` after transposing), ``T`` quintic steps:
``T·(4m²n + 2m³)`` FLOPs in the direct form (:func:`ns_flops`, the common yardstick), and what
our implementation executes in a given dtype and form (:func:`ns_flops_executed`; the Gram form
needs fewer for wide matrices).

Example:
    >>> s = SHAPE_SETS["medium"]
    >>> [shape for _, shape in s.hidden]
    [(2304, 768), (768, 768), (3072, 768), (768, 3072)]
    >>> round(s.ns_flops(steps=5) / 1e9, 1)  # GFLOP per step
    126.8
    >>> import torch
    >>> round(s.ns_flops_executed(5, torch.float32, "fast") / 1e9, 1)  # Gram for the 3x, 4x wide ones
    79.7
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.orthogonalize import ns_flops as newton_schulz_flops

Shape = tuple[int, ...]


def _matrix(shape: Shape) -> tuple[int, int]:
    cols = 1
    for d in shape[1:]:
        cols *= d
    return shape[0], cols


def ns_flops(shape: Shape, steps: int = 5) -> int:
    """FLOPs of ``steps`` direct-form Newton–Schulz iterations on ``shape`` (flattened to 2-D)."""
    return newton_schulz_flops(*_matrix(shape), steps, form="direct")


def ns_flops_executed(shape: Shape, steps: int, dtype: torch.dtype, form: str = "auto") -> int:
    """FLOPs :func:`~lightning_muon.core.orthogonalize.newton_schulz` executes in ``dtype`` and ``form``."""
    return newton_schulz_flops(*_matrix(shape), steps, dtype, form)


@dataclass(frozen=True)
class ShapeSet:
    """Named hidden matrices (Muon branch) and auxiliary tensors (AdamW branch) of a model."""

    name: str
    description: str
    hidden: tuple[tuple[str, Shape], ...]
    aux: tuple[tuple[str, Shape], ...]

    def ns_flops(self, steps: int = 5) -> int:
        """Direct-form Newton–Schulz FLOPs of one step over all hidden matrices."""
        return sum(ns_flops(shape, steps) for _, shape in self.hidden)

    def ns_flops_executed(self, steps: int, dtype: torch.dtype, form: str = "auto") -> int:
        """FLOPs our Newton–Schulz executes in ``dtype`` and ``form`` over all hidden matrices."""
        return sum(ns_flops_executed(shape, steps, dtype, form) for _, shape in self.hidden)

    @staticmethod
    def _count(entries: tuple[tuple[str, Shape], ...]) -> int:
        total = 0
        for _, shape in entries:
            numel = 1
            for d in shape:
                numel *= d
            total += numel
        return total

    @property
    def hidden_numel(self) -> int:
        """Number of elements in the hidden matrices."""
        return self._count(self.hidden)

    @property
    def aux_numel(self) -> int:
        """Number of elements in the auxiliary tensors."""
        return self._count(self.aux)


def _transformer(
    prefix: str, layers: int, width: int, mlp: int
) -> tuple[tuple[tuple[str, Shape], ...], tuple[tuple[str, Shape], ...]]:
    """Hidden matrices and per-block norms/biases of pre-norm blocks with fused QKV and a 2-layer MLP."""
    hidden: list[tuple[str, Shape]] = []
    aux: list[tuple[str, Shape]] = []
    for i in range(layers):
        block = f"{prefix}.{i}"
        hidden += [
            (f"{block}.attn.qkv.weight", (3 * width, width)),
            (f"{block}.attn.proj.weight", (width, width)),
            (f"{block}.mlp.fc.weight", (mlp, width)),
            (f"{block}.mlp.proj.weight", (width, mlp)),
        ]
        aux += [
            (f"{block}.norm_1.weight", (width,)),
            (f"{block}.norm_1.bias", (width,)),
            (f"{block}.attn.qkv.bias", (3 * width,)),
            (f"{block}.attn.proj.bias", (width,)),
            (f"{block}.norm_2.weight", (width,)),
            (f"{block}.norm_2.bias", (width,)),
            (f"{block}.mlp.fc.bias", (mlp,)),
            (f"{block}.mlp.proj.bias", (width,)),
        ]
    return tuple(hidden), tuple(aux)


def _pythia_14m() -> ShapeSet:
    # litgpt Config.from_name("pythia-14m"): n_layer=6, n_embd=128, intermediate_size=512,
    # padded_vocab_size=50304, bias=True, LayerNorm, untied lm_head.
    hidden, aux = _transformer("transformer.h", 6, 128, 512)
    aux = (
        ("transformer.wte.weight", (50304, 128)),
        *aux,
        ("transformer.ln_f.weight", (128,)),
        ("transformer.ln_f.bias", (128,)),
        ("lm_head.weight", (50304, 128)),
    )
    return ShapeSet("small", "litgpt pythia-14m (6 x 128, MLP 512)", hidden, aux)


def _gpt2_block() -> ShapeSet:
    hidden, aux = _transformer("h", 1, 768, 3072)
    return ShapeSet("medium", "one GPT-2-small block (768, MLP 3072)", hidden, aux)


def _gpt2_small() -> ShapeSet:
    # GPT-2 small: n_layer=12, n_embd=768, vocab 50257, n_positions 1024, head tied to wte.
    hidden, aux = _transformer("h", 12, 768, 3072)
    aux = (
        ("wte.weight", (50257, 768)),
        ("wpe.weight", (1024, 768)),
        *aux,
        ("ln_f.weight", (768,)),
        ("ln_f.bias", (768,)),
    )
    return ShapeSet("large", "GPT-2 small, all 12 blocks (124M parameters)", hidden, aux)


SHAPE_SETS: dict[str, ShapeSet] = {s.name: s for s in (_pythia_14m(), _gpt2_block(), _gpt2_small())}
