"""A small causal transformer with awkward shapes for sharding tests.

Dimensions are chosen so that a 2-rank ``Shard(0)`` split is uneven (odd row counts), one matrix
has a single row (rank 1 holds an empty shard), the token embedding is tied to the output head and
there are 1-D gains and biases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, DIM, HIDDEN, HEADS, LAYERS, CONTEXT = 29, 10, 37, 2, 2, 8


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM)
        self.qkv = nn.Linear(DIM, 3 * DIM, bias=False)  # 30 rows: even
        self.proj = nn.Linear(DIM, DIM)
        self.norm2 = nn.LayerNorm(DIM)
        self.fc = nn.Linear(DIM, HIDDEN)  # 37 rows: 19 + 18
        self.out = nn.Linear(HIDDEN, DIM, bias=False)
        self.gate = nn.Linear(DIM, 1, bias=False)  # 1 row: rank 1 holds an empty shard

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, HEADS, C // HEADS).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(att.transpose(1, 2).reshape(B, T, C))
        h = self.out(F.gelu(self.fc(self.norm2(x))))
        return x + h * torch.sigmoid(self.gate(x))


class TinyTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, DIM)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(DIM)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight  # tied

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


def make_model(seed: int = 0) -> TinyTransformer:
    torch.manual_seed(seed)
    model = TinyTransformer()
    with torch.no_grad():  # non-trivial gains and biases
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def batches(steps: int, seed: int = 1, batch: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (batch, CONTEXT + 1), generator=g) for _ in range(steps)]


def loss_fn(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
