"""Runnable benchmarks; their results are written in ``docs/``.

* ``python -m lightning_muon.benchmarks.distributed_step``: owner-computes orthogonalization on
  2 CPU ranks (Newton–Schulz FLOP shares, bytes per parameter, step time against one process).
* ``python -m lightning_muon.benchmarks.callback_overhead``: cost of the diagnostic callbacks on
  the quick-start model (interleaved rounds, medians).
* ``python -m lightning_muon.benchmarks.figure1``: the NorMuon paper's Figure 1 on the
  quick-start model (AdamW, Muon, NorMuon).
"""
