"""``GPTLanguageModel``: litgpt's ``GPT`` as a next-byte language model in Lightning.

The network is :class:`litgpt.GPT` with a small :class:`litgpt.Config` (pre-norm RMSNorm,
SwiGLU MLP, rotary embeddings, no biases) over the 256-symbol byte vocabulary of
:mod:`lightning_muon.data`. The loss is the mean next-token cross-entropy
``L = −(1/BT) Σ log softmax(z_{b,t})[y_{b,t}]`` in nats per byte, logged as ``train_loss`` (every
step) and ``val_loss`` (per validation epoch), with torchmetrics aggregates of the same quantity in
the units the docs speak: ``train_bpb`` / ``val_bpb`` (bits per byte, ``L / ln 2``) and ``val_ppl``
(perplexity per byte, ``exp L``). The validation aggregates weight every batch by its token count
and are reduced across data-parallel ranks by torchmetrics.

Its optimizer comes from :class:`~lightning_muon.MuonMixin`: ``--model.optimizer normuon
--model.lr 0.02 --model.lr_schedule cosine`` on the command line. The transformer is built in
``__init__``; to shard it with FSDP2 subclass and apply ``fully_shard`` in ``configure_model``
(call ``super().configure_model()`` first). The optimizer is built after that hook.

Example:
    >>> import torch
    >>> model = GPTLanguageModel(n_layer=1, n_embd=32, n_head=2, block_size=16, optimizer="adamw")
    >>> x = torch.randint(0, 256, (2, 16))
    >>> model(x).shape
    torch.Size([2, 16, 256])
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from litgpt import GPT, Config
from torchmetrics.aggregation import MeanMetric

from lightning_muon.data.corpus import VOCAB_SIZE
from lightning_muon.lightning.mixin import MuonMixin


def byte_gpt_config(
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 128,
    block_size: int = 128,
    vocab_size: int = VOCAB_SIZE,
    intermediate_size: int | None = None,
) -> Config:
    """A small LLaMA-style litgpt ``Config`` for byte-level modelling.

    ``intermediate_size`` defaults to ``4 · n_embd`` (SwiGLU hidden width).
    """
    for name, value in (
        ("n_layer", n_layer),
        ("n_head", n_head),
        ("n_embd", n_embd),
        ("block_size", block_size),
        ("vocab_size", vocab_size),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if n_embd % n_head:
        raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}.")
    return Config(
        name="byte-gpt",
        block_size=block_size,
        vocab_size=vocab_size,
        padded_vocab_size=vocab_size,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        rotary_percentage=1.0,
        parallel_residual=False,
        bias=False,
        norm_class_name="RMSNorm",
        mlp_class_name="LLaMAMLP",
        intermediate_size=intermediate_size or 4 * n_embd,
    )


class BitsPerByte(MeanMetric):
    """Token-weighted mean of a next-byte cross-entropy given in nats, reported in bits: ``L / ln 2``."""

    def compute(self) -> torch.Tensor:
        return super().compute() / math.log(2)


class BytePerplexity(MeanMetric):
    """Token-weighted mean of a next-byte cross-entropy given in nats, reported as ``exp L``."""

    def compute(self) -> torch.Tensor:
        return super().compute().exp()


class GPTLanguageModel(MuonMixin, pl.LightningModule):
    """A small litgpt GPT trained on next-byte prediction, optimized by the Muon family.

    Args:
        n_layer: Transformer blocks.
        n_head: Attention heads per block.
        n_embd: Embedding (residual stream) width.
        block_size: Context length in tokens; must match the data module's ``block_size``.
        vocab_size: Vocabulary size (256 for bytes).
        intermediate_size: SwiGLU hidden width (``None``: ``4 · n_embd``).
        optimizer: Optimizer name (``muon``, ``normuon``, ``adamuon``, ``muon_nsr``, ``muon_vs``,
            ``spectral_muon``, ``adamw``), class name or dotted class path.
        lr: Base learning rate, or a mapping optimizer name → lr (``None``, or no entry for the
            chosen optimizer: its own default).
        weight_decay: Decoupled weight decay (``None``: the optimizer's default).
        optimizer_kwargs: Further constructor arguments of the optimizer.
        lr_schedule: ``constant``, ``cosine``, ``linear``, ``wsd`` or ``None`` (no schedule).
        warmup_steps: Linear warmup steps of the schedule.
        min_lr_ratio: Final learning rate of the schedule as a fraction of ``lr``.
        decay_fraction: Fraction of the run the ``wsd`` schedule spends decaying.
        total_steps: Schedule length in optimizer steps (``None``: from the Trainer).
    """

    def __init__(
        self,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        block_size: int = 128,
        vocab_size: int = VOCAB_SIZE,
        intermediate_size: int | None = None,
        optimizer: str = "muon",
        lr: float | dict[str, float] | None = None,
        weight_decay: float | None = None,
        optimizer_kwargs: dict[str, Any] | None = None,
        lr_schedule: str | None = None,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        decay_fraction: float = 0.2,
        total_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = byte_gpt_config(
            n_layer, n_head, n_embd, block_size, vocab_size, intermediate_size
        )
        self.model = GPT(self.config)
        self.train_bpb = BitsPerByte()
        self.val_bpb = BitsPerByte()
        self.val_ppl = BytePerplexity()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(B, T, vocab_size)`` for token ids ``idx`` of shape ``(B, T)``."""
        return self.model(idx)

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.train_bpb(loss.detach(), batch[1].numel())
        self.log("train_bpb", self.train_bpb, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log("val_loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True)
        tokens = batch[1].numel()
        self.val_bpb.update(loss, tokens)
        self.val_ppl.update(loss, tokens)
        self.log("val_bpb", self.val_bpb, prog_bar=True, on_step=False, on_epoch=True)
        self.log("val_ppl", self.val_ppl, on_step=False, on_epoch=True)
