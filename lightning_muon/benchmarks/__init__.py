"""Runnable benchmarks (``python -m lightning_muon.benchmarks.<name>``); results are written in ``docs/``."""
