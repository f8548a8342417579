"""``litgpt pretrain`` with FSDP2 instead of FSDP1, routing by name and update diagnostics: a thin layer.

Usage (the same YAML and the same ``--key value`` overrides as ``litgpt pretrain``)::

    python -m lightning_muon.litgpt.pretrain --config recipes/litgpt/tiny/normuon.yaml --devices 2
    python -m lightning_muon.litgpt.pretrain --config recipes/litgpt/pythia-160m/adamuon.yaml --devices 8

This runs litgpt's own ``litgpt.pretrain.setup`` — its training loop, ``torch.compile``, resume,
checkpoints and metric names — with three substitutions, restored afterwards:

* **FSDP2 for FSDP1.** The ``FSDPStrategy`` litgpt builds on more than one device becomes Fabric's
  ``ModelParallelStrategy`` with ``fully_shard`` on every transformer block and the root
  (parameters stay ``Shard(0)`` matrices; litgpt's ``state_dict_type="full"`` is kept: the final
  ``lit_model.pth`` is one file). The model is initialized whole, as on one device, then sharded,
  so the weights equal the one-device run's (it must fit in one device's memory). Stock ``litgpt pretrain --devices N`` (FSDP1) is exact as well
  (``docs/how-to/fsdp.md``); FSDP2 keeps whole rows on each rank and needs less communication.
* **Routing by name.** A Muon-family optimizer gets ``model.named_parameters()`` instead of
  ``model.parameters()``; the routing table is printed on rank 0.
* **Diagnostics.** Every ``--diagnostics_interval`` optimizer steps the update of every parameter is
  measured (:class:`~lightning_muon.litgpt.monitor.UpdateMonitor`, the keys of the Lightning
  callback :class:`~lightning_muon.callbacks.UpdateNormMonitor`) and logged with litgpt's logger.

The recipe is checked before anything starts (:func:`~lightning_muon.litgpt.recipes.check_recipe`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any
from unittest import mock

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


def fsdp2_strategy(world_size: int) -> type:
    """A stand-in for the ``FSDPStrategy`` class litgpt instantiates: Fabric's FSDP2 strategy over ``world_size`` ranks."""
    from lightning.fabric.strategies import ModelParallelStrategy, Strategy
    from litgpt.utils import reset_parameters

    class FSDP2Strategy(ModelParallelStrategy):
        def __init__(self, state_dict_type: str = "full", **_fsdp1_only: Any) -> None:
            super().__init__(
                parallelize_fn=shard_gpt,
                data_parallel_size=world_size,
                tensor_parallel_size=1,
                save_distributed_checkpoint=state_dict_type != "full",
            )

        def module_init_context(self, empty_init: bool | None = None) -> Any:
            # as on one device: allocated, not initialized (no meta device) ...
            return Strategy.module_init_context(self, empty_init)

        def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
            # ... and litgpt's initializers run on the whole model before sharding, in litgpt's
            # order: the same weights as on one device (random init of DTensors draws other numbers)
            reset_parameters(module)
            return super().setup_module(module)

    return FSDP2Strategy


class _Run:
    """What the substitutions share during one run: the model, the Fabric, the monitor."""

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self.model: torch.nn.Module | None = None
        self.fabric: Any = None
        self.state: dict[str, Any] = {}
        self.steps = 0
        self.before: list[torch.Tensor] | None = None

    def make_model(self, gpt_class: type, *args: Any, **kwargs: Any) -> torch.nn.Module:
        self.model = gpt_class(*args, **kwargs)
        return self.model

    def make_optimizer(self, instantiate: Any, spec: Any, params: Any, **kwargs: Any) -> Any:
        params = list(params)
        names = (
            {id(p): n for n, p in self.model.named_parameters()} if self.model is not None else {}
        )
        cls, init_args = resolve_optimizer(spec)
        muon_family = issubclass(cls, MuonFamilyOptimizer)
        every = (
            self.model is not None
            and len(params) == len(names)
            and all(id(p) in names for p in params)
        )
        if muon_family and all(id(p) in names for p in params):  # routing by name, not by shape
            optimizer = instantiate(spec, [(names[id(p)], p) for p in params], **kwargs)
        elif every:  # the AdamW baseline of every configuration path: decay / no-decay groups
            from lightning_muon.lightning.factory import build_optimizer

            optimizer = build_optimizer(self.model, cls, **{**init_args, **kwargs})
        else:
            optimizer = instantiate(spec, params, **kwargs)
        if not muon_family:
            return optimizer
        _print_rank_zero(f"{type(optimizer).__name__} routing:\n{optimizer.routing}")
        if self.interval > 0:
            branch = {
                n: g["branch"] for g in optimizer.param_groups for n in g.get("param_names", ())
            }
            monitor = UpdateMonitor([(names[id(p)], p) for p in params if id(p) in names], branch)
            optimizer.register_step_pre_hook(lambda *_: self._snapshot(monitor))
            optimizer.register_step_post_hook(lambda *_: self._measure(monitor))
        return optimizer

    def _snapshot(self, monitor: UpdateMonitor) -> None:
        self.before = monitor.snapshot() if (self.steps + 1) % self.interval == 0 else None

    def _measure(self, monitor: UpdateMonitor) -> None:
        self.steps += 1
        if self.before is not None:
            metrics = monitor.measure(self.before)
            self.before = None
            if self.fabric is not None:  # on litgpt's axis: the iteration of this step, from 0
                self.fabric.log_dict(metrics, step=self.state.get("iter_num", self.steps) - 1)

    def fit(self, litgpt_fit: Any, fabric: Any, *args: Any, **kwargs: Any) -> Any:
        self.fabric, self.state = fabric, kwargs.get("state", {})
        return litgpt_fit(fabric, *args, **kwargs)


def _print_rank_zero(text: str) -> None:
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(text, flush=True)


@contextlib.contextmanager
def substitutions(world_size: int, interval: int, argv: list[str]) -> Iterator[_Run]:
    """Swap FSDP2, named routing and diagnostics into ``litgpt.pretrain`` for the duration of a run."""
    import litgpt.pretrain as lp

    run = _Run(interval)
    save_hyperparameters = lp.save_hyperparameters

    def save_litgpt_hyperparameters(*args: Any, **kwargs: Any) -> None:
        # litgpt parses sys.argv again with its own parser, which does not know our options
        with mock.patch.object(sys, "argv", [sys.argv[0], *litgpt_arguments(argv)]):
            save_hyperparameters(*args, **kwargs)

    with contextlib.ExitStack() as stack:
        stack.enter_context(
            mock.patch.object(lp, "save_hyperparameters", save_litgpt_hyperparameters)
        )
        if world_size > 1:
            stack.enter_context(mock.patch.object(lp, "FSDPStrategy", fsdp2_strategy(world_size)))
        for name, method, original in (
            ("GPT", run.make_model, lp.GPT),
            ("instantiate_torch_optimizer", run.make_optimizer, lp.instantiate_torch_optimizer),
            ("fit", run.fit, lp.fit),
        ):
            stack.enter_context(
                mock.patch.object(lp, name, lambda *a, _m=method, _o=original, **k: _m(_o, *a, **k))
            )
        yield run


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


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` like ``litgpt pretrain``, check the recipe, then run litgpt's ``setup``."""
    from litgpt.pretrain import setup
    from litgpt.utils import parse_devices

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    cfg = parser.parse_args(argv)
    recipe = yaml.safe_load(parser.dump(cfg, skip_validation=True))
    recipe.pop("config", None)
    interval = recipe.pop("diagnostics_interval")
    check_recipe(recipe)
    init = parser.instantiate_classes(cfg)
    args = {k: v for k, v in vars(init).items() if k not in ("config", "diagnostics_interval")}
    world = parse_devices(args["devices"]) * args["num_nodes"]
    with substitutions(world, interval, argv):
        setup(**args)


def litgpt_arguments(argv: list[str]) -> list[str]:
    """``argv`` without the options litgpt does not know (``--diagnostics_interval``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--diagnostics_interval":
            skip = True
        elif not arg.startswith("--diagnostics_interval="):
            out.append(arg)
    return out


if __name__ == "__main__":
    main()
