"""Check a ``litgpt pretrain`` recipe before training: optimizer, data, vocabulary and routing.

:func:`check_recipe` reads a recipe YAML, builds its model on the meta device (no memory, no
time), builds its optimizer from ``model.parameters()`` exactly as ``litgpt pretrain`` does (plain
tensors: routing by shape and the ``vocab_size`` hint) and returns the routing by parameter name.
It raises ``ValueError`` naming the recipe key for an unknown optimizer, a data folder or tokenizer
directory that does not exist, a tokenizer whose ids exceed ``padded_vocab_size``, and a
Muon-family optimizer without a ``vocab_size`` hint equal to ``padded_vocab_size``.

Example:
    >>> report = check_recipe("recipes/litgpt/tiny/normuon.yaml")  # doctest: +SKIP
    >>> report.branch_of("lm_head.weight"), report.branch_of("transformer.h.0.attn.qkv.weight")  # doctest: +SKIP
    ('adamw', 'muon')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from lightning_muon.optim.base import MuonFamilyOptimizer

from .data import tokenizer_size

#: Parameters of a litgpt ``GPT`` that must take the AdamW branch whatever the optimizer.
ADAMW_MATRICES = ("transformer.wte.weight", "lm_head.weight")


@dataclass
class RecipeReport:
    """What :func:`check_recipe` found: the model config, optimizer class and routing by name."""

    path: Path
    recipe: dict[str, Any]
    config: Any
    optimizer_class: type[torch.optim.Optimizer]
    init_args: dict[str, Any]
    routing: dict[str, str]

    def branch_of(self, name: str) -> str:
        """``"muon"`` or ``"adamw"`` for the model parameter ``name``."""
        return self.routing[name]


def load_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe's YAML as a dict (anchors resolved)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"recipe {str(path)!r} does not exist")
    recipe = yaml.safe_load(path.read_text())
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe {str(path)!r} is not a YAML mapping")
    return recipe


def model_config(recipe: dict[str, Any]) -> Any:
    """The recipe's ``litgpt.Config``: ``model_config`` if given, else ``Config.from_name(model_name)``."""
    from litgpt.model import Config

    if recipe.get("model_config"):
        return Config(**recipe["model_config"])
    if "model_name" not in recipe:
        raise ValueError("recipe has neither model_config nor model_name")
    return Config.from_name(recipe["model_name"])


def resolve_optimizer(spec: Any) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """``(class, init_args)`` of the recipe's ``optimizer`` entry (a class path or ``{class_path, init_args}``).

    A bare name means ``torch.optim.<name>``, as litgpt reads it; the class path is then resolved
    by :func:`~lightning_muon.lightning.factory.resolve_optimizer_class`, the resolver of every
    configuration path.
    """
    from lightning_muon.lightning.factory import OptimizerConfigError, resolve_optimizer_class

    if isinstance(spec, str):
        class_path, init_args = spec if "." in spec else f"torch.optim.{spec}", {}
    elif isinstance(spec, dict) and "class_path" in spec:
        class_path, init_args = spec["class_path"], dict(spec.get("init_args") or {})
    else:
        raise ValueError(
            f"optimizer: expected a class path or {{class_path, init_args}}, got {spec!r}"
        )
    try:
        return resolve_optimizer_class(class_path), init_args
    except OptimizerConfigError as error:
        raise ValueError(f"optimizer.class_path={class_path!r}: {error}") from None


def _check_data(recipe: dict[str, Any], padded_vocab_size: int) -> None:
    data = recipe.get("data") or {}
    init = (data.get("init_args") or {}) if isinstance(data, dict) else {}
    for key in ("data_dir", "train_data_path", "val_data_path"):
        if init.get(key) is not None and not Path(init[key]).expanduser().exists():
            raise ValueError(f"data.init_args.{key}={str(init[key])!r} does not exist")
    tokenizer_dir = recipe.get("tokenizer_dir")
    tokenizer = None
    if tokenizer_dir is not None:
        from litgpt.tokenizer import Tokenizer

        if not Path(tokenizer_dir).is_dir():
            raise ValueError(
                f"tokenizer_dir={str(tokenizer_dir)!r} does not exist (write a byte tokenizer there with "
                "`python -m lightning_muon.litgpt.make_tokenizer DIR`)"
            )
        tokenizer = Tokenizer(tokenizer_dir)
    size = tokenizer_size(tokenizer)
    if size > padded_vocab_size:
        raise ValueError(
            f"the tokenizer ({tokenizer_dir or 'raw bytes'}) has {size} token ids but "
            f"model_config.padded_vocab_size={padded_vocab_size}: the embedding cannot hold them"
        )
    limit = init.get("padded_vocab_size")
    if limit is not None and limit != padded_vocab_size:
        raise ValueError(
            f"data.init_args.padded_vocab_size={limit} differs from the model's padded_vocab_size={padded_vocab_size}"
        )


def _check_batch(recipe: dict[str, Any]) -> None:
    """Reject the batch settings litgpt asserts on (``TrainArgs.batch_size`` and ``gradient_accumulation_iters``)."""
    from litgpt.args import TrainArgs

    train = recipe.get("train") or {}
    defaults = TrainArgs()
    global_batch = int(train.get("global_batch_size") or defaults.global_batch_size)
    micro = int(train.get("micro_batch_size") or defaults.micro_batch_size)
    devices = recipe.get("devices", 1)
    devices = 1 if devices in (None, "auto") else int(devices)
    nodes = int(recipe.get("num_nodes") or 1)
    ranks = devices * nodes
    per_rank = global_batch // ranks
    if per_rank == 0:
        raise ValueError(
            f"train.global_batch_size={global_batch} is smaller than devices x num_nodes = {ranks}: raise "
            f"train.global_batch_size to at least {ranks}"
        )
    if per_rank < micro:
        raise ValueError(
            f"train.global_batch_size={global_batch} over devices x num_nodes = {ranks} leaves {per_rank} sequences "
            f"per device, fewer than train.micro_batch_size={micro}: set train.micro_batch_size to at most "
            f"{per_rank}, or train.global_batch_size to at least {ranks * micro}"
        )


def named_routing(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, str]:
    """Branch of every model parameter under ``optimizer`` (``"adamw"`` for a plain AdamW)."""
    branch_of = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            branch_of[id(p)] = group.get("branch", "adamw")
    return {name: branch_of[id(p)] for name, p in model.named_parameters()}


def check_recipe(recipe: str | Path | dict[str, Any]) -> RecipeReport:
    """Validate a recipe (a YAML path or its dict) and return its routing.

    Raises ``ValueError`` on anything that would otherwise fail later, or route wrongly.
    """
    from litgpt.model import GPT

    if isinstance(recipe, dict):
        path = Path("<recipe>")
    else:
        path = Path(recipe)
        recipe = load_recipe(path)
    config = model_config(recipe)
    cls, init_args = resolve_optimizer(recipe.get("optimizer", "AdamW"))
    _check_data(recipe, config.padded_vocab_size)
    _check_batch(recipe)
    is_muon = issubclass(cls, MuonFamilyOptimizer)
    if is_muon and init_args.get("vocab_size") != config.padded_vocab_size:
        raise ValueError(
            f"optimizer.init_args.vocab_size={init_args.get('vocab_size')!r} must equal "
            f"model_config.padded_vocab_size={config.padded_vocab_size}: litgpt passes plain tensors, "
            "and this hint is what routes the embedding and lm_head to AdamW"
        )
    with torch.device("meta"):
        model = GPT(config)
    if (recipe.get("train") or {}).get("tie_embeddings"):
        model.transformer.wte.weight = model.lm_head.weight
    optimizer = cls(model.parameters(), **init_args)
    routing = named_routing(optimizer, model)
    if is_muon:
        for name, p in model.named_parameters():
            expected = "adamw" if name in ADAMW_MATRICES or p.ndim < 2 else "muon"
            if routing[name] != expected:
                raise ValueError(
                    f"{path}: {name} {tuple(p.shape)} was routed to {routing[name]!r}, expected "
                    f"{expected!r}: with plain tensors (stock litgpt) a matrix with a dimension equal to "
                    f"vocab_size={init_args.get('vocab_size')} counts as an embedding, so keep hidden sizes "
                    "different from padded_vocab_size, or run `python -m lightning_muon.litgpt.pretrain` "
                    "(routing by name)"
                )
    return RecipeReport(path, recipe, config, cls, init_args, routing)
