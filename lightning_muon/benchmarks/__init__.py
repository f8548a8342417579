"""Runnable benchmarks; their results are written in ``docs/``.

* ``python -m lightning_muon.benchmarks.step_speed``: step time, fraction of the machine, peak
  temporary memory and optimizer-state bytes of every optimizer, side by side in one process;
* ``python -m lightning_muon.benchmarks.ns_quality``: accuracy and cost of the Newton–Schulz
  coefficient tables against the exact polar factor;
* ``python -m lightning_muon.benchmarks.distributed_step``: owner-computes orthogonalization on
  2 CPU ranks (Newton–Schulz FLOP shares, bytes per parameter, step time against one process);
* ``python -m lightning_muon.benchmarks.callback_overhead``: cost of the diagnostic callbacks on
  the quick-start model (interleaved rounds, medians);
* ``python -m lightning_muon.benchmarks.figure1``: the NorMuon paper's Figure 1 on the
  quick-start model (AdamW, Muon, NorMuon);
* ``python -m lightning_muon.benchmarks.efficiency``: the papers' training-efficiency metric (the
  share of AdamW's steps each optimizer needs to reach AdamW's final validation loss) on a small
  litgpt GPT, with a learning-rate sweep per optimizer and several seeds.

The building blocks (shape sets, calibration, interleaved timing, memory accounting, the reference
tier) live in their own modules so tests and other benchmarks can reuse them.
"""
