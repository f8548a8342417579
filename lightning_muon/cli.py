"""The ``lightning-muon`` command (the main job) and the CLI classes behind it.

The command runs :class:`~lightning_muon.lightning.job.LightningMuonJob`, a
:class:`~lightning_muon.lightning.lightning_cli.MuonLightningCLI` over the built-in
:class:`~lightning_muon.lightning.gpt.GPTLanguageModel` and
:class:`~lightning_muon.data.ByteCorpusDataModule`::

    lightning-muon fit --config recipes/quickstart.yaml
    python -m lightning_muon.cli fit --config recipes/quickstart.yaml --model.optimizer adamw

``MuonLightningCLI`` is a drop-in ``LightningCLI`` for your own model and data whose ``--optimizer``
and ``--lr_scheduler`` are built at fit time from the module's live, named parameters::

    from lightning_muon.cli import MuonLightningCLI
    MuonLightningCLI(MyModel, MyData)

Importing this module is light: the Lightning classes load on first use, and
``lightning-muon --help`` answers without loading Lightning (``lightning-muon fit --help`` lists
every option and loads it).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

_LAZY = {
    "MuonLightningCLI": "lightning_muon.lightning.lightning_cli",
    "MuonArgumentParser": "lightning_muon.lightning.lightning_cli",
    "build_scheduler": "lightning_muon.lightning.lightning_cli",
    "check_strategy": "lightning_muon.lightning.lightning_cli",
    "resolve_optimizer_flags": "lightning_muon.lightning.lightning_cli",
    "LightningMuonJob": "lightning_muon.lightning.job",
    "JobConfigError": "lightning_muon.lightning.job",
    "default_loggers": "lightning_muon.lightning.job",
}

DESCRIPTION = "Train the byte-level GPT with a Muon-family optimizer."

TOP_LEVEL_HELP = f"""usage: lightning-muon [-h] {{fit,validate}} ...

{DESCRIPTION}

subcommands:
  fit        train the model (lightning-muon fit --config recipes/quickstart.yaml)
  validate   evaluate a checkpoint on the validation split (--ckpt_path PATH)

`lightning-muon fit --help` lists every option of a subcommand: --model.*, --data.*, --trainer.*,
--optimizer, --lr_scheduler, --torch_threads, --config, --print_config.
"""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_muon.cli' has no attribute {name!r}")


def main(args: list[str] | None = None) -> None:
    """Run the ``lightning-muon`` command (``fit``, ``validate``)."""
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] in ("-h", "--help"):
        print(TOP_LEVEL_HELP, end="")
        raise SystemExit(0 if argv else 2)
    from lightning_muon.data import ByteCorpusDataModule, CorpusError
    from lightning_muon.lightning.factory import OptimizerConfigError
    from lightning_muon.lightning.guard import StaleParametersError
    from lightning_muon.lightning.job import JobConfigError, LightningMuonJob

    try:
        from lightning_muon.lightning.gpt import GPTLanguageModel
    except ModuleNotFoundError as error:
        if error.name != "litgpt":
            raise
        print(
            "lightning-muon: error: the built-in model is litgpt's GPT; install it with "
            "pip install 'lightning-muon[litgpt]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None

    # Our training set is an IterableDataset that shards itself across workers and ranks, which
    # is what this generic Lightning warning asks for.
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    try:
        LightningMuonJob(
            GPTLanguageModel,
            ByteCorpusDataModule,
            args=args,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"description": DESCRIPTION},
        )
    except (OptimizerConfigError, StaleParametersError, CorpusError, JobConfigError) as error:
        print(f"lightning-muon: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
