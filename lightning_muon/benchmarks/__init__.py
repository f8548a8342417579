"""Runnable benchmarks of the optimizer step and of the orthogonalizers.

* ``python -m lightning_muon.benchmarks.step_speed``: step time, fraction of the machine, peak
  temporary memory and optimizer-state bytes of every optimizer, side by side in one process;
* ``python -m lightning_muon.benchmarks.ns_quality``: accuracy and cost of the Newton–Schulz
  coefficient tables against the exact polar factor.

The building blocks (shape sets, calibration, interleaved timing, memory accounting, the reference
tier) live in their own modules so tests and other benchmarks can reuse them.
"""
