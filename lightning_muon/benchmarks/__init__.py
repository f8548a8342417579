"""Runnable benchmarks.

* ``python -m lightning_muon.benchmarks.distributed_step``: owner-computes orthogonalization on
  2 CPU ranks (Newton–Schulz FLOP shares, bytes per parameter, step time against one process).
"""
