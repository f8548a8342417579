"""Images and histograms for every logger that has an API for them.

Scalars travel through Lightning's own logging (``LightningModule.log_dict``); pictures cannot,
so this module sends them to each logger of ``trainer.loggers`` in that logger's own API:

============================  ==========================================  ==========================
logger                        image                                       histogram
============================  ==========================================  ==========================
``TensorBoardLogger``         ``experiment.add_image(key, HWC, step)``     ``experiment.add_histogram``
``WandbLogger``               ``log_image(key, [HWC], step)``              ``wandb.Histogram`` via
                                                                          ``log_metrics``
``MLFlowLogger``              ``experiment.log_image(run_id, HWC,          (none in MLflow)
                              "<key>/step_<step>.png")``
anything else                 skipped, one info message                    skipped, one info message
============================  ==========================================  ==========================

A matplotlib figure is rendered once to an ``(H, W, 3)`` ``uint8`` array (Agg canvas, no
``pyplot``), which every one of these APIs takes. The loggers are recognised by class
(``lightning.pytorch.loggers``), TensorBoard-like loggers also by their ``experiment`` having
``add_image``/``add_histogram``.

Example:
    >>> from matplotlib.figure import Figure
    >>> fig = Figure(figsize=(2, 1))
    >>> _ = fig.add_subplot().plot([0, 1])
    >>> figure_to_array(fig).shape
    (100, 200, 3)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
from torch import Tensor

__all__ = ["figure_to_array", "log_histogram", "log_image"]


def figure_to_array(fig: Any) -> Any:
    """``(H, W, 3)`` ``uint8`` RGB pixels of a matplotlib figure (drawn on an Agg canvas)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _has(experiment: Any, method: str) -> bool:
    return callable(getattr(type(experiment), method, None))


def log_image(
    loggers: list[Any], key: str, fig: Any, step: int, note: Callable[[str, str], None]
) -> int:
    """Send ``fig`` to every logger that takes images; returns how many took it.

    ``note(kind, message)`` reports, once per logger class, a logger without an image API.
    """
    if not loggers:
        return 0
    pixels = figure_to_array(fig)
    sent = 0
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[pixels], step=step)
        elif isinstance(logger, MLFlowLogger):
            name = f"{key}/step_{step:06d}.png"
            logger.experiment.log_image(logger.run_id, pixels, artifact_file=name)
        elif _has(logger.experiment, "add_image"):
            logger.experiment.add_image(key, pixels, step, dataformats="HWC")
        else:
            note(
                f"noimage-{type(logger).__name__}",
                f"{type(logger).__name__} has no image API; spectrum images go only to "
                "TensorBoard, W&B and MLflow loggers",
            )
            continue
        sent += 1
    return sent


def log_histogram(
    loggers: list[Any], key: str, values: Tensor, step: int, note: Callable[[str, str], None]
) -> int:
    """Send a histogram of ``values`` to every logger that takes histograms; returns how many."""
    sent = 0
    values = values.detach().float().cpu()
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.log_metrics({key: wandb.Histogram(values.numpy())}, step=step)
        elif not isinstance(logger, MLFlowLogger) and _has(logger.experiment, "add_histogram"):
            logger.experiment.add_histogram(key, values, step)
        else:
            note(
                f"nohistogram-{type(logger).__name__}",
                f"{type(logger).__name__} has no histogram API; histograms go only to "
                "TensorBoard and W&B loggers",
            )
            continue
        sent += 1
    return sent
