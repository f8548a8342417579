"""Lightning callbacks that show what Muon-family (or any) optimizers do to weight matrices.

* :class:`UpdateNormMonitor` — per-neuron update norms, update RMS, update-to-weight ratio;
* :class:`SpectrumMonitor` — singular-value spectra of updates, momenta, directions, weights;
* :func:`compare_runs` — finished runs side by side (NorMuon paper, Figure 1).

Both callbacks are thin adapters over :mod:`lightning_muon.diagnostics`.

Example:
    >>> from lightning_muon.callbacks import SpectrumMonitor, UpdateNormMonitor
    >>> callbacks = [UpdateNormMonitor(every_n_steps=50), SpectrumMonitor(every_n_steps=100)]
"""

from lightning_muon.callbacks.spectrum import SpectrumMonitor
from lightning_muon.callbacks.update_norm import UpdateNormMonitor
from lightning_muon.diagnostics.plotting import compare_runs

__all__ = ["SpectrumMonitor", "UpdateNormMonitor", "compare_runs"]
