"""litgpt integration: offline pretraining data, a byte tokenizer, recipe checks and an FSDP2 entry point.

* ``litgpt pretrain --config recipes/litgpt/tiny/normuon.yaml [--devices N]`` runs the recipes with
  stock litgpt (one device: routing by the optimizer's ``vocab_size`` hint; several: FSDP1, routing
  by the names FSDP keeps, exact owner-computes on the flat shards);
* ``python -m lightning_muon.litgpt.pretrain --config ... --devices 2`` runs litgpt's own loop with
  FSDP2, name-based routing and update diagnostics (:mod:`lightning_muon.litgpt.pretrain`).

:func:`attention_structure` gives an optimizer the per-head (or q/k/v) blocks of litgpt's fused
``attn.qkv`` weights: ``Muon(model, structure=attention_structure(model))``.

Importing this package imports litgpt (``pip install lightning-muon[litgpt]``).
"""

from .data import StdlibText, is_byte_tokenizer, tokenizer_size
from .recipes import RecipeReport, check_recipe, load_recipe
from .structure import attention_structure
from .tokenizer import write_byte_tokenizer

__all__ = [
    "RecipeReport",
    "StdlibText",
    "attention_structure",
    "check_recipe",
    "is_byte_tokenizer",
    "load_recipe",
    "tokenizer_size",
    "write_byte_tokenizer",
]
