"""The hyperparameter checks, re-exported from :mod:`lightning_muon.core.validation`."""

from ..core.validation import *  # noqa: F403
from ..core.validation import __all__  # noqa: F401
