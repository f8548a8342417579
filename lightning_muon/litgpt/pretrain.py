"""Run a ``litgpt pretrain`` recipe on one or more devices with FSDP2, name-based routing and diagnostics.

Usage (the same YAML and the same ``--key value`` overrides as ``litgpt pretrain``)::

    python -m lightning_muon.litgpt.pretrain --config recipes/litgpt/tiny/normuon.yaml --devices 2
    python -m lightning_muon.litgpt.pretrain --config recipes/litgpt/pythia-160m/adamuon.yaml --devices 8

What differs from ``litgpt pretrain`` and why:

* **FSDP2, not FSDP1.** litgpt shards with FSDP1 on more than one device, which flattens every
  matrix into 1-D shards that no Muon-family update can use. Here Fabric's
  ``ModelParallelStrategy`` applies ``fully_shard`` to every transformer block and to the root:
  parameters stay matrices (``Shard(0)`` DTensors). One device: no sharding.
* **Routing by name.** The optimizer gets ``model.named_parameters()``: ``transformer.wte`` and
  ``lm_head`` go to AdamW by name (the recipe's ``vocab_size`` hint is harmless).
* **Diagnostics.** litgpt calls no callbacks; every ``--diagnostics_interval`` optimizer steps the
  loop measures the update of every parameter (RMS, per-neuron norms, see
  :mod:`lightning_muon.litgpt.monitor`) and logs it with the recipe's logger (CSV by default).
* The recipe is checked before any process starts (:func:`~lightning_muon.litgpt.recipes.check_recipe`).
* Validation loss is averaged over ranks (each rank evaluates its share of the windows, so
  ``eval.max_iters`` batches cover as many windows as on one device with the same global batch).
* No ``torch.compile`` (the eager model shards cleanly; compile the blocks yourself if you need it),
  no ``resume`` / ``initial_checkpoint_dir`` (refused). The final checkpoint is
  ``out_dir/final/lit_model.pth``: a file on one device, a distributed-checkpoint folder with FSDP2.

The loop is litgpt's: every iteration sets every param group's ``lr`` to
``litgpt.pretrain.get_lr(optimizer.defaults["lr"], ...)`` (the AdamW branch keeps its
``adamw_lr_ratio``), gradient accumulation up to ``train.global_batch_size``, gradient clipping at
``train.max_norm``, and ``train.max_tokens`` sets the length.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from lightning_muon.optim.base import MuonFamilyOptimizer

from .monitor import UpdateMonitor
from .recipes import check_recipe, resolve_optimizer

DIAGNOSTICS_INTERVAL = 10


def shard_gpt(model: torch.nn.Module, device_mesh: Any) -> torch.nn.Module:
    """FSDP2: ``fully_shard`` every transformer block, then the whole GPT, over the data-parallel mesh."""
    from torch.distributed.fsdp import fully_shard

    mesh = device_mesh["data_parallel"]
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def build_parser() -> Any:
    """``litgpt pretrain``'s arguments (from its own ``setup`` signature) plus ``--diagnostics_interval``."""
    from jsonargparse import ActionConfigFile, ArgumentParser
    from litgpt.pretrain import setup as litgpt_setup

    parser = ArgumentParser(
        prog="python -m lightning_muon.litgpt.pretrain",
        description="Run a litgpt pretraining recipe with FSDP2, name-based routing and diagnostics.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a litgpt pretrain recipe (YAML)")
    parser.add_function_arguments(litgpt_setup)
    parser.add_argument(
        "--diagnostics_interval",
        type=int,
        default=DIAGNOSTICS_INTERVAL,
        help="log update statistics every N optimizer steps (0: never)",
    )
    return parser


def make_optimizer(spec: Any, model: torch.nn.Module, fused: bool) -> torch.optim.Optimizer:
    """The recipe's optimizer: Muon-family classes get ``named_parameters()``; others go through
    :func:`~lightning_muon.lightning.factory.build_optimizer` (AdamW: the baseline's decay /
    no-decay groups, as ``--model.optimizer adamw`` and ``--optimizer AdamW`` build it)."""
    from lightning_muon.lightning.factory import build_optimizer

    cls, init_args = resolve_optimizer(spec)
    if issubclass(cls, MuonFamilyOptimizer):
        return cls(model.named_parameters(), **init_args)
    if "fused" in inspect.signature(cls).parameters:
        init_args.setdefault("fused", fused)
    return build_optimizer(model, cls, **init_args)


def branch_map(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, str]:
    """Branch of each parameter name (plain optimizers: ``"adamw"``)."""
    by_id = {id(p): g.get("branch", "adamw") for g in optimizer.param_groups for p in g["params"]}
    return {n: by_id.get(id(p), "adamw") for n, p in model.named_parameters()}


@torch.no_grad()
def validate(fabric: L.Fabric, model: torch.nn.Module, loader: Any, max_iters: int) -> float:
    """Mean validation loss over at most ``max_iters`` batches per rank, averaged over ranks."""
    from litgpt.utils import chunked_cross_entropy

    model.eval()
    losses = []
    for k, batch in enumerate(loader):
        if k >= max_iters:
            break
        T = model.max_seq_length
        logits = model(batch[:, :T].contiguous().long())
        losses.append(chunked_cross_entropy(logits, batch[:, 1 : T + 1].contiguous().long()))
    model.train()
    loss = torch.stack(losses).mean()
    return float(fabric.all_reduce(loss, reduce_op="mean"))


def _to_float(x: torch.Tensor) -> float:
    return float(x.full_tensor() if hasattr(x, "full_tensor") else x)


def fit(fabric: L.Fabric, args: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """Build model, optimizer and data on this rank and train; returns the last metrics."""
    from litgpt.model import GPT
    from litgpt.pretrain import get_dataloaders, get_lr, initialize_weights
    from litgpt.tokenizer import Tokenizer
    from litgpt.utils import CycleIterator, chunked_cross_entropy

    config, train, eval_args = args["model_config"], args["train"], args["eval"]
    devices, num_nodes = args["devices"], args["num_nodes"]
    fabric.seed_everything(args["seed"])
    with fabric.init_module(empty_init=False):
        model = GPT(config)
    initialize_weights(fabric, model, n_layer=config.n_layer, n_embd=config.n_embd)
    if train.tie_embeddings:
        model.transformer.wte.weight = model.lm_head.weight
    if train.max_seq_length:
        model.max_seq_length = train.max_seq_length
    model = fabric.setup(model)
    module = model.module
    optimizer = make_optimizer(args["optimizer"], module, fused=fabric.device.type == "cuda")
    routing = getattr(optimizer, "routing", None)
    if routing is not None:
        fabric.print(routing)
    monitor = UpdateMonitor(module.named_parameters(), branch_map(optimizer, module))
    optimizer = fabric.setup_optimizers(optimizer)

    tokenizer = Tokenizer(args["tokenizer_dir"]) if args["tokenizer_dir"] else None
    train_dl, val_dl = get_dataloaders(fabric, args["data"], tokenizer, train, model.max_seq_length)
    train_dl, val_dl = fabric.setup_dataloaders(train_dl, val_dl)

    T = model.max_seq_length
    max_iters = (train.max_tokens // fabric.world_size) // (train.micro_batch_size * T)
    accum = train.gradient_accumulation_iters(devices, num_nodes)
    warmup = train.warmup_iters(devices, num_nodes, max_iters, train_dl)
    interval = args["diagnostics_interval"]
    iter_num = step_count = 0
    losses: list[torch.Tensor] = []
    last: dict[str, Any] = {}
    t0 = time.perf_counter()
    for batch in CycleIterator(train_dl):
        if iter_num >= max_iters:
            break
        lr = get_lr(optimizer.defaults["lr"], iter_num, warmup, max_iters, train.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        iter_num += 1
        accumulating = iter_num % accum != 0
        with fabric.no_backward_sync(model, enabled=accumulating):
            logits = model(batch[:, :T].contiguous().long())
            loss = chunked_cross_entropy(logits, batch[:, 1 : T + 1].contiguous().long())
            fabric.backward(loss / accum)
        losses.append(loss.detach())
        if not accumulating:
            grad_norm = fabric.clip_gradients(model, optimizer, max_norm=train.max_norm)
            measure = interval > 0 and (step_count + 1) % interval == 0
            before = monitor.snapshot() if measure else None
            optimizer.step()
            optimizer.zero_grad()
            step_count += 1
            if before is not None:
                diag = monitor.measure(before)
                fabric.log_dict(diag, step=iter_num - 1)
                last.update(diag)
            last["grad_norm"] = _to_float(grad_norm)
        if iter_num % (train.log_interval * accum) == 0:
            mean_loss = float(fabric.all_reduce(torch.stack(losses).mean(), reduce_op="mean"))
            losses.clear()
            metrics = {
                "loss": mean_loss,
                "iter": iter_num,
                "step": step_count,
                "learning_rate": lr,
                "grad_norm": last["grad_norm"],
                "total_tokens": iter_num * train.micro_batch_size * T * fabric.world_size,
                "iter_time": (time.perf_counter() - t0) / iter_num,
            }
            fabric.print(
                f"iter {iter_num} step {step_count} | loss {mean_loss:.4f} | lr {lr:.3g} | "
                f"{1e3 * metrics['iter_time']:.0f} ms/iter"
            )
            fabric.log_dict(metrics, step=iter_num - 1)
            last.update(metrics)
        if not accumulating and step_count % eval_args.interval == 0:
            val = validate(fabric, model, val_dl, eval_args.max_iters)
            fabric.print(f"iter {iter_num}: val loss {val:.4f}")
            fabric.log_dict({"val_loss": val, "val_ppl": math.exp(val)}, step=iter_num - 1)
            last["val_loss"] = val
        save_every = train.save_interval
        if save_every and not accumulating and step_count % save_every == 0:
            save(
                fabric,
                model,
                optimizer,
                args,
                recipe,
                iter_num,
                step_count,
                f"step-{step_count:08d}",
            )
    if eval_args.final_validation:
        val = validate(fabric, model, val_dl, eval_args.max_iters)
        fabric.print(f"Final evaluation | val loss: {val:.4f} | val ppl: {math.exp(val):.3f}")
        fabric.log_dict({"val_loss": val, "val_ppl": math.exp(val)}, step=iter_num)
        last["val_loss"] = val
    save(fabric, model, optimizer, args, recipe, iter_num, step_count, "final")
    fabric.logger.finalize("success")
    return last


def save(
    fabric: L.Fabric,
    model: Any,
    optimizer: Any,
    args: dict[str, Any],
    recipe: dict[str, Any],
    iter_num: int,
    step_count: int,
    tag: str,
) -> Path:
    """Checkpoint as litgpt lays it out: ``<out_dir>/<tag>/lit_model.pth`` plus configs and tokenizer."""
    from litgpt.utils import copy_config_files, save_config

    path = Path(args["out_dir"]) / tag / "lit_model.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    fabric.print(f"Saving checkpoint to {str(path)!r}")
    state = {"model": model, "optimizer": optimizer, "iter_num": iter_num, "step_count": step_count}
    fabric.save(path, state)
    if fabric.global_rank == 0:
        save_config(args["model_config"], path.parent)
        (path.parent / "hyperparameters.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        if args["tokenizer_dir"] is not None:
            copy_config_files(Path(args["tokenizer_dir"]), path.parent)
    return path


def run(args: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """Create the Fabric (FSDP2 over all devices when there is more than one), launch and train."""
    from lightning.fabric.strategies import ModelParallelStrategy
    from litgpt.utils import (
        choose_logger,
        get_default_supported_precision,
        init_out_dir,
        parse_devices,
    )

    if args.get("resume") or args.get("initial_checkpoint_dir"):
        raise ValueError(
            "resume and initial_checkpoint_dir are not supported by python -m lightning_muon.litgpt.pretrain; "
            "use `litgpt pretrain --devices 1` to resume a single-device run"
        )
    devices = parse_devices(args["devices"])
    args = {**args, "devices": devices, "out_dir": init_out_dir(args["out_dir"])}
    world = devices * args["num_nodes"]
    strategy: Any = "auto"
    if world > 1:
        strategy = ModelParallelStrategy(
            parallelize_fn=shard_gpt, data_parallel_size=world, tensor_parallel_size=1
        )
    logger = choose_logger(
        args["logger_name"],
        args["out_dir"],
        name=f"pretrain-{args['model_config'].name}",
        log_interval=args["train"].log_interval,
        log_args=asdict(args["log"]),
    )
    fabric = L.Fabric(
        devices=devices,
        num_nodes=args["num_nodes"],
        strategy=strategy,
        precision=args["precision"] or get_default_supported_precision(training=True),
        loggers=[logger],
    )
    fabric.launch()
    return fit(fabric, args, recipe)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` like ``litgpt pretrain``, check the recipe, then train."""
    parser = build_parser()
    cfg = parser.parse_args(argv)
    recipe = yaml.safe_load(parser.dump(cfg, skip_validation=True))
    recipe.pop("config", None)
    check_recipe(recipe)
    init = parser.instantiate_classes(cfg)
    args = {k: v for k, v in vars(init).items() if k != "config"}
    if args["model_config"] is None:
        from litgpt.model import Config

        args["model_config"] = Config.from_name(args["model_name"])
    return run(args, recipe)


if __name__ == "__main__":
    main()
