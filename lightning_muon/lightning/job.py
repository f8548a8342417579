"""``LightningMuonJob``: the ``lightning-muon`` command's CLI, over the built-in GPT and corpus.

On top of :class:`~lightning_muon.lightning.lightning_cli.MuonLightningCLI` it

* offers ``fit`` and ``validate`` (the built-in model has no test or predict step);
* links ``--model.block_size`` to the data module's ``block_size`` (one context length, set once:
  ``--model.block_size 256`` changes both, and ``data.block_size`` cannot be given);
* logs to CSV (and TensorBoard when installed) under ``--trainer.default_root_dir`` when no
  ``--trainer.logger`` is given, and shows a :class:`~lightning_muon.lightning.reporting.StepProgressBar`;
* ends ``fit`` with :func:`~lightning_muon.lightning.reporting.run_summary` (where the results went);
* turns a configuration mistake in the model or data arguments (``--data.val_fraction 1.5``) into
  one line naming the class, the parameter and the value (:class:`JobConfigError`);
* takes ``--torch_threads N`` (``torch.set_num_threads``).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from jsonargparse.typing import PositiveInt
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_muon.data.corpus import CorpusError
from lightning_muon.lightning.factory import OptimizerConfigError
from lightning_muon.lightning.lightning_cli import MuonArgumentParser, MuonLightningCLI
from lightning_muon.lightning.reporting import StepProgressBar, run_summary

SUBCOMMANDS = ("fit", "validate")
"""The subcommands of ``lightning-muon``."""


class JobConfigError(ValueError):
    """A model, data or Trainer argument the command refuses before anything runs."""


class JobArgumentParser(MuonArgumentParser):
    """The command's parser: errors read ``lightning-muon: error: ...``."""

    error_prog = "lightning-muon"


def default_loggers(root: str) -> list[Any]:
    """CSV logs, plus TensorBoard when it is installed, in one ``root/lightning_logs/version_N``."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    csv = CSVLogger(save_dir=root)
    loggers: list[Any] = [csv]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        loggers.append(TensorBoardLogger(save_dir=root, version=csv.version))
    return loggers


def _raised_in(error: BaseException) -> str:
    """The class whose ``__init__`` raised ``error`` (the innermost one), or ``""``."""
    name, traceback = "", error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code.co_name == "__init__" and "self" in frame.f_locals:
            name = type(frame.f_locals["self"]).__name__
        traceback = traceback.tb_next
    return name


class LightningMuonJob(MuonLightningCLI):
    """The ``lightning-muon`` command (see the module docstring). Use it like ``LightningCLI``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", JobArgumentParser)
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {k: v for k, v in LightningCLI.subcommands().items() if k in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("model.block_size", "data.block_size")
        parser.add_argument(
            "--torch_threads",
            type=PositiveInt | None,
            default=None,
            help="Threads for CPU math (torch.set_num_threads); null keeps PyTorch's default. "
            "On a small or shared CPU one thread is often the fastest.",
        )

    def before_instantiate_classes(self) -> None:
        threads = self._get(self.config, "torch_threads")
        if threads is not None:
            torch.set_num_threads(threads)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, MisconfigurationException) as error:
            if isinstance(error, JobConfigError | OptimizerConfigError | CorpusError):
                raise
            where = _raised_in(error)
            raise JobConfigError(f"{where}: {error}" if where else str(error)) from error

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True) and "logger" not in kwargs:
            kwargs["logger"] = default_loggers(config.get("default_root_dir") or "runs")
        callbacks = config.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(callback, ProgressBar) for callback in callbacks
        ):
            kwargs["callbacks"] = [*callbacks, StepProgressBar()]
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            print(run_summary(self.trainer), flush=True)
