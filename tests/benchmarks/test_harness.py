"""The benchmark building blocks against independent facts: litgpt's model, torch's FLOP counter,
known parameter counts, and hand-checkable timing and memory patterns."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import lightning_muon as lm
from lightning_muon.benchmarks.candidates import build_candidates, candidate_names
from lightning_muon.benchmarks.machine import copy_probe, matmul_probe
from lightning_muon.benchmarks.memory import peak_temporary_bytes, state_bytes
from lightning_muon.benchmarks.ns_quality import inputs, quality_row
from lightning_muon.benchmarks.shapes import SHAPE_SETS, ns_flops, ns_flops_executed
from lightning_muon.benchmarks.timing import interleaved, ratio_summary
from lightning_muon.core.orthogonalize import JORDAN, POLAR_EXPRESS, newton_schulz


def test_small_set_is_litgpt_pythia_14m_as_routed_by_the_package():
    litgpt = pytest.importorskip("litgpt")
    from litgpt.model import GPT

    with torch.device("meta"):
        model = GPT(litgpt.Config.from_name("pythia-14m"))
    groups = {g["branch"]: g for g in lm.param_groups(model)}
    shapes = dict((n, tuple(p.shape)) for n, p in model.named_parameters())
    s = SHAPE_SETS["small"]
    assert dict(s.hidden) == {n: shapes[n] for n in groups["muon"]["param_names"]}
    assert dict(s.aux) == {n: shapes[n] for n in groups["adamw"]["param_names"]}


def test_gpt2_small_sets_have_the_published_parameter_count():
    large, medium = SHAPE_SETS["large"], SHAPE_SETS["medium"]
    assert large.hidden_numel + large.aux_numel == 124_439_808  # GPT-2 small, head tied
    assert large.hidden_numel == 12 * medium.hidden_numel
    assert round(large.ns_flops(5) / 1e12, 2) == 1.52  # 1.52 TFLOP of Newton–Schulz per step


@pytest.mark.parametrize("shape", [(24, 96), (96, 24), (32, 32), (20, 50)])
@pytest.mark.parametrize("steps", [5, 7])
def test_flop_formulas_match_torch_flop_counter(shape, steps):
    X = torch.randn(2, *shape)
    for form, expected in (
        ("direct", ns_flops(shape, steps)),
        ("auto", ns_flops_executed(shape, steps, torch.float32)),
    ):
        with FlopCounterMode(display=False) as counter:
            newton_schulz(X, JORDAN, steps, form=form)
        assert counter.get_total_flops() == 2 * expected, form


def test_interleaved_rounds_rotate_the_order_and_ratios_are_per_round():
    calls = []
    runs = {name: (lambda name=name: calls.append(name) or 1.0) for name in "abc"}
    times = interleaved(runs, rounds=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert times == {"a": [1.0] * 3, "b": [1.0] * 3, "c": [1.0] * 3}
    summary = ratio_summary([2.0, 3.0, 10.0], [1.0, 1.0, 2.0])
    assert summary == {"median": 3.0, "min": 2.0, "max": 5.0}
    with pytest.raises(ValueError, match="Invalid rounds: 0"):
        interleaved(runs, rounds=0)


def test_peak_temporary_bytes_follows_live_allocations():
    def pattern():
        a = torch.empty(1 << 20)  # 4 MiB
        b = torch.empty(1 << 19)  # +2 MiB: 6 MiB live
        del a
        c = torch.empty(1 << 20)  # 2 + 4 = 6 MiB live
        del b, c

    peak = peak_temporary_bytes(pattern, torch.device("cpu"))
    assert 6 << 20 <= peak < (6 << 20) + (64 << 10)
    assert peak_temporary_bytes(lambda: None, torch.device("cpu")) == 0


def test_state_bytes_counts_views_once_each():
    p = torch.zeros(4, 8)
    base = torch.zeros(2, 4, 8)
    state = {p: {"a": base[0], "b": base[1], "step": torch.zeros(())}}
    assert state_bytes(state, [p]) == 2 * 4 * 8 * 4 + 4
    state[p]["c"] = state[p]["a"]  # the same tensor twice
    assert state_bytes(state, [p]) == 2 * 4 * 8 * 4 + 4


def test_probes_measure_positive_work():
    for probe in (
        matmul_probe(torch.device("cpu"), torch.float32, 32, 64),
        copy_probe(torch.device("cpu"), 1),
    ):
        assert probe.work > 0 and probe.run() > 0


def test_candidates_share_gradients_and_refuse_unknown_names(monkeypatch):
    lineup = build_candidates(SHAPE_SETS["small"], ["muon", "torch_muon"], torch.device("cpu"))
    a, b = lineup.candidates["muon"].params, lineup.candidates["torch_muon"].params
    assert all(x.grad is y.grad and x is not y for x, y in zip(a, b, strict=True))
    before = lineup.gradient_checksum()
    a[0].grad[0, 0] += 1.0
    assert lineup.gradient_checksum() != before
    with pytest.raises(ValueError, match="Unknown candidates: \\['sgd'\\]"):
        build_candidates(SHAPE_SETS["small"], ["sgd"], torch.device("cpu"))
    assert "muon@bfloat16" in candidate_names(torch.device("cpu"))  # fp32 default (pinned)
    monkeypatch.setenv("LIGHTNING_MUON_NS_DTYPE", "bfloat16")  # as on a bf16 GPU or CPU
    assert "muon@float32" in candidate_names(torch.device("cuda"))


def test_quality_improves_with_steps_and_polar_express_is_tighter_than_jordan():
    mats = {"gaussian": inputs(seed=0, scale=0.125)["gaussian"]}
    errors = [
        quality_row(POLAR_EXPRESS, k, torch.float64, mats)["error"]["gaussian"] for k in (3, 5, 8)
    ]
    assert errors[0] > errors[1] > errors[2]
    jordan = quality_row(JORDAN, 5, torch.float32, mats)["band"]["gaussian"]
    polar = quality_row(POLAR_EXPRESS, 5, torch.float32, mats)["band"]["gaussian"]
    assert polar[1] - polar[0] < jordan[1] - jordan[0]
