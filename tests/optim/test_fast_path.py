"""The step's fast paths: packed bucket state, zero-copy one-matrix buckets, the gradient screen,
and the memory bound of chunked buckets. Each fast path is compared with the copying path."""

import copy
import warnings

import pytest
import torch

from lightning_muon.benchmarks.memory import peak_temporary_bytes
from lightning_muon.benchmarks.reference import ReferenceMuon
from lightning_muon.optim.registry import OPTIMIZERS

NAMES = sorted(OPTIMIZERS)


def params(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]


def set_grads(ps, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen)


@pytest.mark.parametrize("name", NAMES)
def test_packed_state_steps_equal_the_copying_path(name):
    """Fresh state of a multi-matrix bucket shares one storage; a state reloaded as separate tensors
    takes the stack-and-copy-back path. Both must give bit-identical weights and state."""
    shapes = [(8, 24)] * 3 + [(24, 8)] * 2 + [(16, 16)]
    packed, separate = params(shapes), params(shapes)
    opt_p = OPTIMIZERS[name]([{"params": packed, "branch": "muon"}])
    opt_s = OPTIMIZERS[name]([{"params": separate, "branch": "muon"}])
    set_grads(packed, 0), set_grads(separate, 0)
    opt_p.step(), opt_s.step()
    first = opt_p.state[packed[0]]["step"]
    assert first._base is not None and opt_p.state[packed[1]]["step"]._base is first._base
    opt_s.load_state_dict(copy.deepcopy(opt_s.state_dict()))  # deepcopy keeps sharing...
    for state in opt_s.state.values():  # ...so separate the tensors explicitly
        for key, value in state.items():
            state[key] = value.clone()
    assert opt_s.state[separate[0]]["step"]._base is None
    for seed in range(1, 4):
        set_grads(packed, seed), set_grads(separate, seed)
        opt_p.step(), opt_s.step()
    for a, b in zip(packed, separate, strict=True):
        assert torch.equal(a, b)
        for key, value in opt_p.state[a].items():
            assert torch.equal(value, opt_s.state[b][key]), key


def test_packed_state_is_updated_in_place_without_copies():
    ps = params([(8, 24)] * 4)
    opt = OPTIMIZERS["muon"]([{"params": ps, "branch": "muon"}])
    set_grads(ps, 0)
    opt.step()
    buffers = [opt.state[p]["momentum_buffer"] for p in ps]
    pointers = [b.data_ptr() for b in buffers]
    set_grads(ps, 1)
    grads = [p.grad.clone() for p in ps]
    opt.step()
    assert [opt.state[p]["momentum_buffer"] for p in ps] == buffers  # same objects
    assert [b.data_ptr() for b in buffers] == pointers
    assert all(torch.equal(p.grad, g) for p, g in zip(ps, grads, strict=True))  # grads untouched
    assert int(opt.state[ps[0]]["step"]) == 2


def test_one_matrix_bucket_reads_gradient_in_place_and_leaves_it_unchanged():
    (p,) = params([(12, 40)])
    opt = OPTIMIZERS["adamuon"]([{"params": [p], "branch": "muon"}], nesterov=True)
    for seed in range(3):
        set_grads([p], seed)
        grad = p.grad.clone()
        opt.step()
        assert torch.equal(p.grad, grad)
    assert int(opt.state[p]["step"]) == 3


def test_fast_muon_matches_the_plain_reference_loop():
    shapes = [(8, 24), (8, 24), (24, 8), (16, 16), (4, 6, 3, 3)]
    ours, ref = params(shapes), params(shapes)
    opt = OPTIMIZERS["muon"](  # the plain loop is Keller Jordan's Muon
        [{"params": ours, "branch": "muon"}], weight_decay=0.1, **OPTIMIZERS["muon"].paper_settings
    )
    ref_opt = ReferenceMuon(ref, lr=0.02, weight_decay=0.1)
    for seed in range(4):
        set_grads(ours, seed), set_grads(ref, seed)
        opt.step(), ref_opt.step()
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_gradient_screen_passes_huge_finite_values_and_names_nonfinite_ones():
    ps = params([(8, 24), (8, 24), (16, 16)])
    opt = OPTIMIZERS["muon"]([{"params": ps, "branch": "muon"}])
    set_grads(ps, 0)
    ps[0].grad[0, 0] = 3e38  # finite, but its 2-norm overflows: the screen must recheck
    before = [p.detach().clone() for p in ps]
    opt.step()  # no FloatingPointError
    assert all(not torch.equal(p, b) for p, b in zip(ps[1:], before[1:], strict=True))
    for bad in (float("-inf"), float("inf"), float("nan")):
        set_grads(ps, 1)
        ps[2].grad[3, 4] = bad
        snapshot = [p.detach().clone() for p in ps]
        with pytest.raises(FloatingPointError, match="group0.param2") as err:
            opt.step()
        assert "group0.param0" not in str(err.value)
        assert all(torch.equal(p, s) for p, s in zip(ps, snapshot, strict=True))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "spectral_muon"])
def test_peak_temporary_memory_is_bounded_by_the_bucket_size(name):
    """One bucket in flight at a time: peak ≤ 7 fp32 copies of a bucket, and chunking shrinks it."""
    shape, count = (64, 256), 8
    numel = shape[0] * shape[1]

    def peak(per):
        ps = params([shape] * count)
        opt = OPTIMIZERS[name]([{"params": ps, "branch": "muon"}], max_bucket_numel=per * numel)
        set_grads(ps, 0)
        opt.step()
        return peak_temporary_bytes(opt.step, torch.device("cpu"))

    chunked, whole = peak(2), peak(count)
    assert chunked <= 7 * 4 * 2 * numel, chunked / (4 * 2 * numel)
    assert whole <= 7 * 4 * count * numel, whole / (4 * count * numel)
    assert chunked * 3 <= whole


def run_steps(name, compiled, steps=3, momenta=None):
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(16, 48, generator=gen)) for _ in range(3)]
    opt = OPTIMIZERS[name]([{"params": ps, "branch": "muon"}], compile_elementwise=compiled)
    for k in range(steps):
        if momenta is not None:  # a momentum schedule, as lightning_muon's schedulers write it
            opt.param_groups[0]["momentum"] = momenta[k]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return ps, opt


@pytest.mark.parametrize("name", ["muon", "normuon"])
def test_compiled_elementwise_hooks_match_eager(name):
    """Graph capture of the in-place state updates (aot_eager: the capture without code generation)."""
    torch._dynamo.reset()
    compiled, _ = run_steps(name, "aot_eager")
    eager, _ = run_steps(name, False)
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_a_hook_that_fails_to_compile_runs_eagerly_with_a_warning():
    from torch._dynamo import register_backend

    @register_backend(name="lightning_muon_test_broken")
    def broken(gm, example_inputs):
        raise RuntimeError("this backend cannot compile")

    torch._dynamo.reset()
    with pytest.warns(UserWarning, match="torch.compile of (begin|finish) failed") as rec:
        fallback, opt = run_steps("normuon", "lightning_muon_test_broken")
    assert len(rec) == 2  # once per hook, not once per step
    eager, _ = run_steps("normuon", False)
    for a, b in zip(fallback, eager, strict=True):
        assert torch.equal(a, b)  # nothing was applied twice


def test_a_scheduled_momentum_does_not_recompile_the_hooks():
    """Momentum reaches the graph as a tensor: a schedule that changes it every step reuses the graph."""
    torch._dynamo.reset()
    momenta = [0.85, 0.9, 0.93, 0.95]
    with torch._dynamo.config.patch(error_on_recompile=True), warnings.catch_warnings():
        warnings.simplefilter("error")  # a recompile would fall back to eager with a warning
        compiled, _ = run_steps("normuon", "aot_eager", steps=4, momenta=momenta)
    eager, _ = run_steps("normuon", False, steps=4, momenta=momenta)
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_recompile_limit_falls_back_to_eager_with_one_warning():
    """FailOnRecompileLimitHit is not a TorchDynamoException subclass to rely on: any failure falls back."""
    torch._dynamo.reset()
    limit = torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True)
    with limit, pytest.warns(UserWarning, match="torch.compile of") as rec:
        # alternating nesterov (a Python bool, guarded) recompiles on the second step
        gen = torch.Generator().manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(16, 48, generator=gen)) for _ in range(2)]
        opt = OPTIMIZERS["muon"]([{"params": ps, "branch": "muon"}], compile_elementwise="aot_eager")
        for k in range(4):
            opt.param_groups[0]["nesterov"] = bool(k % 2)
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
    assert 1 <= len(rec) <= 2  # at most once per hook
    assert all(torch.isfinite(p).all() for p in ps)


def test_packed_state_stays_packed_through_save_and_load():
    """torch.save/torch.load keep the shared storage, so a resumed run keeps the zero-copy path."""
    import io

    from lightning_muon.engine.buckets import stacked_view as _stacked_view

    ps = params([(8, 24)] * 3)
    opt = OPTIMIZERS["normuon"]([{"params": ps, "branch": "muon"}])
    set_grads(ps, 0)
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    resumed = OPTIMIZERS["normuon"]([{"params": resumed_params, "branch": "muon"}])
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for key in ("momentum_buffer", "row_second_moment", "step"):
        tensors = [resumed.state[p][key] for p in resumed_params]
        assert _stacked_view(tensors) is not None, key
    assert _stacked_view([p.grad for p in ps]) is None  # separate gradient tensors are copied
    set_grads(ps, 1), set_grads(resumed_params, 1)
    opt.step(), resumed.step()
    for a, b in zip(ps, resumed_params, strict=True):
        assert torch.equal(a, b)


def test_ns_form_argument_selects_the_fast_form_and_is_validated():
    from torch.utils.flop_counter import FlopCounterMode

    def run(form):
        ps = params([(16, 64), (16, 64), (64, 16)])
        opt = OPTIMIZERS["muon"]([{"params": ps, "branch": "muon"}], ns_form=form)
        set_grads(ps, 0)
        with FlopCounterMode(display=False) as counter:
            opt.step()
        return ps, counter.get_total_flops()

    (default, direct_flops), (fast, fast_flops) = run("auto"), run("fast")
    assert fast_flops < 0.7 * direct_flops  # aspect 4: 4m²n + 34m³ vs 20m²n + 10m³
    for a, b in zip(default, fast, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="ns_form: 'turbo'"):
        run("turbo")  # at construction: no step, no state


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ns_form", "turbo"),
        ("max_bucket_numel", 0),
        ("compile_elementwise", ""),
        ("compile_elementwise", "no_such_backend"),
    ],
)
def test_engine_arguments_are_validated_at_construction(key, value):
    with pytest.raises(ValueError, match=f"Invalid {key}"):
        OPTIMIZERS["muon"](params([(8, 8)]), **{key: value})


def test_engine_arguments_are_recorded_in_the_state_dict_and_old_states_load():
    ps = params([(8, 24), (8, 24)])
    opt = OPTIMIZERS["normuon"](ps, ns_form="fast", max_bucket_numel=4096, vocab_size=1000)
    set_grads(ps, 0)
    opt.step()
    saved = opt.state_dict()
    assert {g["ns_form"] for g in saved["param_groups"]} == {"fast"}
    assert {g["max_bucket_numel"] for g in saved["param_groups"]} == {4096}
    old = copy.deepcopy(saved)  # as saved before these keys existed
    for group in old["param_groups"]:
        for key in ("ns_form", "max_bucket_numel", "compile_elementwise"):
            del group[key]
    resumed = OPTIMIZERS["normuon"](params([(8, 24), (8, 24)]), vocab_size=1000)
    resumed.load_state_dict(old)
    group = resumed.param_groups[0]
    assert (group["ns_form"], group["compile_elementwise"]) == ("auto", False)
    assert group["max_bucket_numel"] == 1 << 24
