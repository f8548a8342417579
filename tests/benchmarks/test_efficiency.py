"""The efficiency benchmark's metric, protocol and outputs (a seconds-long smoke configuration)."""

from __future__ import annotations

import json
import math

import pytest

from lightning_muon.benchmarks import efficiency
from lightning_muon.benchmarks.efficiency_report import spread, steps_to_reach
from lightning_muon.benchmarks.lm_training import BenchData, ModelSpec, TrainSpec, train_run


def test_steps_to_reach_interpolates_the_first_crossing() -> None:
    steps, losses = [0, 10, 20, 30], [4.0, 3.0, 2.0, 2.5]
    assert steps_to_reach(steps, losses, 2.5) == pytest.approx(15.0)
    assert steps_to_reach(steps, losses, 2.0) == pytest.approx(20.0)
    assert steps_to_reach(steps, losses, 4.5) == 0.0
    assert steps_to_reach(steps, losses, 1.9) is None
    # brute force oracle: the piecewise-linear curve first reaches the target there
    for target in (3.7, 2.2, 3.0):
        s = steps_to_reach(steps, losses, target)
        fine = [i / 100 for i in range(3001)]
        curve = [_interp(steps, losses, x) for x in fine]
        assert s == pytest.approx(
            next(x for x, y in zip(fine, curve) if y <= target + 1e-12), abs=0.01
        )
    with pytest.raises(ValueError):
        steps_to_reach([0, 1], [1.0], 0.5)


def _interp(xs, ys, x):
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def test_spread() -> None:
    assert spread([1.0, 3.0]) == {"mean": 2.0, "min": 1.0, "max": 3.0}


def test_a_run_is_a_function_of_its_seed() -> None:
    data = BenchData.load(max_bytes=100_000, block_size=16, val_windows=4)
    model, spec = (
        ModelSpec(n_layer=1, n_embd=16, n_head=2, block_size=16),
        TrainSpec(steps=4, batch_size=2, warmup_steps=1, eval_every=2),
    )
    a, b = (train_run("muon", 0.02, 3, model, spec, data) for _ in range(2))
    c = train_run("muon", 0.02, 4, model, spec, data)
    assert a.val_losses == b.val_losses and a.eval_steps == [0, 2, 4]
    assert a.val_losses != c.val_losses
    assert a.val_losses[-1] < a.val_losses[0] < math.log(256) + 0.5


def test_the_adamw_branch_gets_lr_times_ratio_like_torch_adamw() -> None:
    """The grid's absolute AdamW-branch lr reaches the embeddings: oracle torch.optim.AdamW."""
    import torch

    from lightning_muon.benchmarks.lm_training import build_model, make_optimizer

    spec = ModelSpec(n_layer=1, n_embd=16, n_head=2, block_size=8)
    model, twin = build_model(spec, 0), build_model(spec, 0)
    lr, adamw_lr = 0.02, 3e-3
    opt = make_optimizer("normuon", model, lr, {"adamw_lr_ratio": adamw_lr / lr})
    wte, twin_wte = model.transformer.wte.weight, twin.transformer.wte.weight
    oracle = torch.optim.AdamW([twin_wte], lr=adamw_lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0)
    x = torch.randint(0, 256, (2, 8))
    for m in (model, twin):
        m(x).square().mean().backward()
    opt.step()
    oracle.step()
    torch.testing.assert_close(wte, twin_wte, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="AdamW baseline takes no optimizer kwargs"):
        make_optimizer("adamw", model, 1e-3, {"adamw_lr_ratio": 1.0})


@pytest.mark.slow
def test_benchmark_end_to_end(tmp_path) -> None:
    out = tmp_path / "eff.json"
    argv = ["--out", str(out), "--optimizers", "adamw", "normuon", "--seeds", "0", "1",
            "--steps", "6", "--eval-every", "3", "--warmup-steps", "1", "--n-layer", "1",
            "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--batch-size", "2",
            "--val-windows", "4", "--max-bytes", "100000", "--max-extensions", "1",
            "--timing-rounds", "2", "--no-ablation"]  # fmt: skip
    summary = efficiency.main(argv)
    saved = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert "% of AdamW's steps" in out.with_suffix(".md").read_text()
    rows = {r["label"]: r for r in summary["table"]}
    assert rows["adamw"]["time_ratio"] == 1.0
    # the target of each seed is that seed's AdamW final loss, so AdamW needs all its steps
    assert rows["adamw"]["fraction"] == {"mean": 1.0, "min": 1.0, "max": 1.0}
    assert rows["normuon"]["seeds"] == [0, 1]
    # the 2-D grid: the 3 x 3 start cross around the centre plus at most one extension round
    grid = saved["grids"]["normuon"]
    cells = {(c["i"], c["j"]) for c in grid["cells"]}
    assert {(-1, 0), (0, -1), (0, 0), (0, 1), (1, 0)} <= cells and len(cells) <= 5 + 3
    lr0, a0 = efficiency.GRIDS["normuon"][1:3]
    for c in grid["cells"]:
        assert c["lr"] == pytest.approx(lr0 * 2.0 ** c["i"])
        assert c["adamw_lr"] == pytest.approx(a0 * 2.0 ** c["j"])
    runs = {(r["lr"], r["kwargs"].get("adamw_lr_ratio"), r["seed"]): r for r in saved["runs"]}
    best = next(c for c in grid["cells"] if [c["i"], c["j"]] == grid["best"])
    assert best["final_val_loss"] == min(c["final_val_loss"] for c in grid["cells"])
    assert (best["lr"], best["adamw_lr"] / best["lr"], 1) in runs  # the best cell on seed 1
    assert rows["normuon"]["per_seed"][0]["final_val_loss"] == best["final_val_loss"]
    # the defaults rows: 0.1 defaults at their own lr and at AdamW's tuned lr
    labels = {r["label"]: r for r in summary["defaults"]}
    assert labels["normuon|0.1 defaults"]["lr"] == 1e-3
    assert labels["normuon|0.1 defaults, AdamW's lr"]["lr"] == rows["adamw"]["lr"]
    # rerunning the same command reuses the cached runs (only the timing is measured again)
    again = efficiency.main(argv)["table"]
    strip = lambda rows: [{k: v for k, v in r.items() if "time" not in k} for r in rows]  # noqa: E731
    assert strip(again) == strip(summary["table"])


def test_the_gpu_preset_runs_the_same_protocol_on_a_larger_model() -> None:
    args = efficiency.parse_args(["--preset", "gpu", "--device", "cpu", "--no-grid", "--out", "x"])
    assert (args.n_layer, args.n_embd, args.steps, args.seeds) == (12, 768, 1000, [0, 1, 2])
    assert args.no_grid == [] and args.bf16 and args.max_extensions >= 1
    if not __import__("torch").cuda.is_available():
        with pytest.raises(SystemExit):
            efficiency.parse_args(["--preset", "gpu", "--out", "x"])
