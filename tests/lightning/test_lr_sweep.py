"""The learning-rate sweep behind the recipes' values: spec parsing and a two-step run."""

from __future__ import annotations

import math

import pytest

from lightning_muon.benchmarks.lr_sweep import main, parse_spec


def test_parse_spec():
    assert parse_spec("normuon:0.02") == ("normuon", 0.02, {})
    assert parse_spec("muon:0.05:adamw_lr_ratio=0.06,nesterov=False") == (
        "muon",
        0.05,
        {"adamw_lr_ratio": 0.06, "nesterov": False},
    )
    with pytest.raises(ValueError, match="NAME:LR"):
        parse_spec("normuon")


def test_two_step_sweep_prints_a_finite_loss(capsys):
    main(["muon:0.05:adamw_lr_ratio=0.06", "--steps", "2", "--warmup", "1"])
    line = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert line[0] == "muon:0.05:adamw_lr_ratio=0.06"
    assert math.isfinite(float(line[1])) and 4.0 < float(line[1]) < 6.0  # near ln 256 = 5.55
