"""``MuonLightningCLI``: the stock ``LightningCLI`` flags, built at fit time for the Muon family.

The stock ``LightningCLI`` builds ``--optimizer`` eagerly from ``model.parameters()``: before the
Trainer exists, before ``configure_model``, from unnamed tensors. Muon-family optimizers then
cannot tell an embedding or output head from a hidden matrix, and under FSDP2 they hold the
pre-sharding parameters and train nothing. :class:`MuonLightningCLI` accepts the same flags::

    --optimizer NorMuon --optimizer.lr 0.02 --lr_scheduler WarmupCosineLR --lr_scheduler.warmup_steps 50

but links ``--optimizer`` and ``--lr_scheduler`` to hidden keys and instantiates them inside
``configure_optimizers``, at fit time, through
:func:`~lightning_muon.lightning.factory.build_optimizer` from the module's live named parameters:
Muon-family classes route by structure, any other optimizer (``AdamW``) gets the AdamW baseline's
decay / no-decay groups. ``--optimizer`` takes every name
:func:`~lightning_muon.lightning.factory.resolve_optimizer_class` resolves (``normuon``, ``NorMuon``,
``adamw``, ``torch.optim.Muon``, ...), the same names as ``--model.optimizer``. The schedules of
:mod:`lightning_muon.lightning.schedules` get ``total_steps`` from the Trainer when it is not given
and step every optimizer step. Configuration mistakes (unknown optimizer, rejected arguments,
conflicting options, a strategy the optimizer cannot work under) stop the run before training
with one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
from types import MethodType
from typing import Any, NoReturn

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import (
    LightningArgumentParser,
    LightningCLI,
    LRSchedulerTypeTuple,
    ReduceLROnPlateau,
)
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim import Optimizer

import lightning_muon  # noqa: F401  (imports the optimizers and schedules: short names work)
from lightning_muon.lightning.factory import (
    OptimizerConfigError,
    build_optimizer,
    canonical_class_path,
    check_hparams,
    describe_settings,
    is_muon_family,
    optimizer_names_hint,
    resolve_optimizer_class,
)
from lightning_muon.lightning.mixin import HPARAM_DEFAULTS, MuonMixin, trainer_total_steps
from lightning_muon.lightning.schedules import _WarmupSchedule

OPTIMIZER_KEY = "fit_time_optimizer"
SCHEDULER_KEY = "fit_time_lr_scheduler"


def _optimizer_class(spec: dict[str, Any]) -> type[Optimizer]:
    return resolve_optimizer_class(spec["class_path"])


def _import_class(class_path: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def build_scheduler(spec: dict[str, Any], optimizer: Optimizer, module: LightningModule) -> Any:
    """Instantiate a ``--lr_scheduler`` spec for ``optimizer``, filling ``total_steps`` from the
    Trainer when the class takes it and it was not given."""
    cls = _import_class(spec["class_path"])
    kwargs = dict(spec.get("init_args") or {})
    if "total_steps" in inspect.signature(cls).parameters and kwargs.get("total_steps") is None:
        kwargs["total_steps"] = trainer_total_steps(module.trainer)
    try:
        return cls(optimizer, **kwargs)
    except (TypeError, ValueError) as error:
        raise OptimizerConfigError(f"--lr_scheduler {cls.__name__}: {error}") from error


def check_strategy(optimizer_class: type, strategy: Any) -> None:
    """Refuse a Muon-family optimizer under FSDP1 settings that hide the matrices or move them off the device.

    ``strategy="fsdp"`` itself works (``use_orig_params=True``, the default: exact owner-computes
    on the flat shards); ``use_orig_params=False`` leaves no matrix shapes and CPU offload no device.
    """
    if not (is_muon_family(optimizer_class) and isinstance(strategy, FSDPStrategy)):
        return
    if strategy.kwargs.get("use_orig_params") is False:
        raise OptimizerConfigError(
            f"{optimizer_class.__name__} cannot run under FSDPStrategy(use_orig_params=False): the flat "
            "parameters carry no matrix shapes. Use FSDPStrategy(use_orig_params=True) (the default)."
        )
    if getattr(strategy.cpu_offload, "offload_params", False):
        raise OptimizerConfigError(
            f"{optimizer_class.__name__} cannot run under FSDPStrategy(cpu_offload=True): it orthogonalizes "
            "on the compute device. Use FSDPStrategy(cpu_offload=False)."
        )


def resolve_optimizer_flags(args: list[str]) -> list[str]:
    """Rewrite ``--optimizer NAME`` / ``--optimizer=NAME`` into the class path that
    :func:`resolve_optimizer_class` gives, so the flag takes the same names as ``--model.optimizer``.

    Raises:
        OptimizerConfigError: The name is unknown (the message lists the valid ones).
    """
    out = list(args)
    for index, arg in enumerate(out):
        if arg == "--optimizer" and index + 1 < len(out):
            position, value, prefix = index + 1, out[index + 1], ""
        elif arg.startswith("--optimizer="):
            position, value, prefix = index, arg.split("=", 1)[1], "--optimizer="
        else:
            continue
        if not value or value[0] in "{[" or ":" in value or value.endswith((".yaml", ".yml")):
            continue  # a YAML/JSON value or a config file: jsonargparse reads it
        try:
            cls = resolve_optimizer_class(value)
        except OptimizerConfigError as error:
            raise OptimizerConfigError(f"--optimizer {value}: {error}") from None
        out[position] = prefix + canonical_class_path(cls)
    return out


def compact_error(message: str) -> str:
    """jsonargparse's many-line message as one line: its first line and its innermost cause."""
    lines = [line for line in str(message).splitlines() if line.strip()]
    if len(lines) <= 1:
        return str(message).strip()
    skip = ("Subtypes:", "Errors:", "Given value type:", "- Expected a <class 'NoneType'>")
    causes = [line for line in lines[1:] if not line.strip().startswith(skip)]
    if not causes:
        return lines[0].strip()
    innermost = max(causes, key=lambda line: len(line) - len(line.lstrip()))
    return f"{lines[0].strip()} {innermost.strip().lstrip('- ')}"


class MuonArgumentParser(LightningArgumentParser):
    """A ``LightningArgumentParser`` that takes every optimizer name of the package's resolver
    for ``--optimizer`` and reports a mistake in one line (plus the valid names for optimizer
    mistakes) instead of a usage screen."""

    error_prog: str | None = None
    """Program name in error messages (``None``: the parser's ``prog``)."""

    def parse_args(self, args: list[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        try:
            args = resolve_optimizer_flags(sys.argv[1:] if args is None else list(args))
        except OptimizerConfigError as error:
            self.error(str(error))
        return super().parse_args(args, *rest, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        text = compact_error(message)
        if 'key "optimizer"' in message and "Valid names" not in text:
            text = f"{text}\n{optimizer_names_hint()}"
        prog = self.error_prog or (self.prog or "").split(" ")[0]
        sys.stderr.write(f"{prog}: error: {text}\n")
        self.exit(2)


class MuonLightningCLI(LightningCLI):
    """A ``LightningCLI`` whose ``--optimizer``/``--lr_scheduler`` are built at fit time from the
    module's live, named parameters (see the module docstring). Use it like ``LightningCLI``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", MuonArgumentParser)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key in (OPTIMIZER_KEY, SCHEDULER_KEY):
            parser.add_argument(f"--{key}", type=dict | None, default=None, help=argparse.SUPPRESS)
        parser.add_optimizer_args((Optimizer,), link_to=OPTIMIZER_KEY)
        parser.add_lr_scheduler_args(LRSchedulerTypeTuple, link_to=SCHEDULER_KEY)

    def instantiate_classes(self) -> None:
        optimizer_spec = self._get(self.config, OPTIMIZER_KEY)
        scheduler_spec = self._get(self.config, SCHEDULER_KEY)
        if optimizer_spec is not None:
            cls = _optimizer_class(optimizer_spec)
            check_hparams(cls, optimizer_spec.get("init_args") or {})
            self._check_model_does_not_also_choose(cls)
        super().instantiate_classes()
        self._check_strategy(optimizer_spec)
        if optimizer_spec is not None or scheduler_spec is not None:
            self._install(optimizer_spec, scheduler_spec)

    def _model_overrides(self) -> dict[str, Any]:
        """Optimizer hyperparameters of a ``MuonMixin`` model set away from their defaults."""
        config = self._get(self.config, "model")
        defaults = self._parser(self.subcommand).get_defaults().get("model")
        if config is None or defaults is None:
            return {}
        class_path = config.get("class_path") if hasattr(config, "get") else None
        model_class = _import_class(class_path) if class_path else self._model_class
        if not (isinstance(model_class, type) and issubclass(model_class, MuonMixin)):
            return {}
        config, defaults = _init_args(config), _init_args(defaults)
        return {
            key: config[key]
            for key in HPARAM_DEFAULTS
            if key in config and key in defaults and config[key] != defaults[key]
        }

    def _check_model_does_not_also_choose(self, cls: type) -> None:
        overrides = self._model_overrides()
        if overrides:
            given = ", ".join(f"--model.{k}={v!r}" for k, v in overrides.items())
            raise OptimizerConfigError(
                f"--optimizer {cls.__name__} conflicts with {given}: the model's own optimizer "
                "settings would be ignored. Configure the optimizer one way: either --optimizer "
                "(with --optimizer.* and --lr_scheduler) or the --model.* optimizer settings."
            )

    def _check_strategy(self, optimizer_spec: dict[str, Any] | None) -> None:
        if self.subcommand not in (None, "fit") or not hasattr(self, "trainer"):
            return
        cls = _optimizer_class(optimizer_spec) if optimizer_spec else None
        if cls is None and isinstance(self.model, MuonMixin):
            cls = self.model.check_optimizer_settings()["cls"]
        if cls is not None:
            check_strategy(cls, self.trainer.strategy)

    def _install(self, optimizer_spec: dict | None, scheduler_spec: dict | None) -> None:
        model = self.model
        original = model.configure_optimizers
        own = type(model).configure_optimizers
        if optimizer_spec is not None and own not in (
            LightningModule.configure_optimizers,
            MuonMixin.configure_optimizers,
        ):
            rank_zero_warn(
                f"`{type(model).__name__}.configure_optimizers` is replaced by --optimizer "
                f"{optimizer_spec['class_path']}."
            )
        if (
            optimizer_spec is None
            and isinstance(model, MuonMixin)
            and model.hparams.get("lr_schedule")
        ):
            raise OptimizerConfigError(
                f"--lr_scheduler conflicts with --model.lr_schedule={model.hparams['lr_schedule']!r}; "
                "give one schedule."
            )
        cli = self

        def configure_optimizers(module: LightningModule) -> Any:
            if optimizer_spec is None:
                optimizer = original()
                if not isinstance(optimizer, Optimizer):
                    raise OptimizerConfigError(
                        f"--lr_scheduler needs a single optimizer, but "
                        f"{type(module).__name__}.configure_optimizers returned {type(optimizer).__name__}"
                        " (maybe with its own scheduler). Give --optimizer too, or drop --lr_scheduler."
                    )
            else:
                optimizer = cli.build_fit_time_optimizer(module, optimizer_spec)
            scheduler = (
                build_scheduler(scheduler_spec, optimizer, module) if scheduler_spec else None
            )
            return cli.configure_optimizers(module, optimizer, scheduler)

        model.configure_optimizers = MethodType(configure_optimizers, model)

    @staticmethod
    def build_fit_time_optimizer(module: LightningModule, spec: dict[str, Any]) -> Optimizer:
        """The ``--optimizer`` spec over ``module``'s live, named parameters (called at fit time),
        through :func:`build_optimizer`: routed for the Muon family, decay / no-decay groups else."""
        from lightning.pytorch.utilities import rank_zero_info

        cls = _optimizer_class(spec)
        kwargs = dict(spec.get("init_args") or {})
        try:
            optimizer = build_optimizer(module, cls, **kwargs)
        except OptimizerConfigError as error:
            raise OptimizerConfigError(f"--optimizer: {error}") from error
        rank_zero_info(describe_settings(cls, kwargs))
        if is_muon_family(cls):
            rank_zero_info(f"{cls.__name__} parameter routing:\n{optimizer.routing}")
        return optimizer

    @staticmethod
    def configure_optimizers(
        lightning_module: LightningModule, optimizer: Optimizer, lr_scheduler: Any = None
    ) -> Any:
        """The schedules of :mod:`lightning_muon.lightning.schedules` step per optimizer step;
        other schedulers keep the stock ``LightningCLI`` behaviour (per epoch)."""
        if isinstance(lr_scheduler, _WarmupSchedule):
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step"},
            }
        if isinstance(lr_scheduler, ReduceLROnPlateau) or lr_scheduler is None:
            return LightningCLI.configure_optimizers(lightning_module, optimizer, lr_scheduler)
        return [optimizer], [lr_scheduler]


def _init_args(value: Any) -> dict[str, Any]:
    value = value.as_dict() if hasattr(value, "as_dict") else dict(value)
    return dict(value.get("init_args", value))
