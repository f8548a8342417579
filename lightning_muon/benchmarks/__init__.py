"""Runnable benchmarks (``python -m lightning_muon.benchmarks.<name>``)."""
