"""The matrix engine's contract: orthogonalizer objects, the exact modes, and executors that ask
objects instead of testing names. Oracles: float64 SVDs and hand-written single-matrix updates."""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from lightning_muon import Muon, NorMuon, SpectralMuon
from lightning_muon.core.orthogonalize import JORDAN, newton_schulz, ns_flops
from lightning_muon.core.orthogonalizers import (
    ExactPolar,
    NewtonSchulz,
    Orthogonalizer,
    SpectralPower,
    make_orthogonalizer,
)
from lightning_muon.engine import LocalExecutor, MatrixContext, MatrixGroup, MatrixStep
from lightning_muon.optim.registry import OPTIMIZERS

PACKAGE = Path(__file__).resolve().parents[2] / "lightning_muon"


def svd_power(X: torch.Tensor, p: float) -> torch.Tensor:
    U, S, Vh = torch.linalg.svd(X.double(), full_matrices=False)
    return (U * S.pow(p)) @ Vh


def test_orthogonalizers_know_their_cost_and_the_dtype_of_their_results() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    ns = make_orthogonalizer("jordan", steps=5)
    assert isinstance(ns, NewtonSchulz)
    assert ns.flops(768, 3072, cpu) == ns_flops(768, 3072, 5, torch.float32)
    assert ns.result_dtype(torch.float32, cpu) == torch.float32
    bf16 = make_orthogonalizer("jordan", dtype=torch.bfloat16)  # CUDA's default (the suite pins fp32)
    assert bf16.result_dtype(torch.float32, cuda) == torch.bfloat16
    assert make_orthogonalizer("jordan", dtype=torch.float64).result_dtype(torch.float32, cpu) == torch.float32
    svd = make_orthogonalizer("svd")
    assert isinstance(svd, ExactPolar) and svd.result_dtype(torch.float32, cuda) == torch.float32
    assert svd.flops(64, 256, cpu) > 0 and SpectralPower(0.5).flops(64, 256, cpu) > 0


def test_bf16_newton_schulz_results_are_exactly_bf16_values() -> None:
    """What makes the default distributed scatter in ``result_dtype`` lossless."""
    X = torch.randn(3, 16, 40)
    O = NewtonSchulz(JORDAN, dtype=torch.bfloat16)(X)
    assert O.dtype == torch.float32 and torch.equal(O, O.bfloat16().float())
    torch.testing.assert_close(O, newton_schulz(X, JORDAN, dtype=torch.bfloat16), atol=0, rtol=0)


@pytest.mark.parametrize("power", [0.25, 0.5])
def test_orthogonalizer_svd_alone_makes_spectral_muon_exact(power: float) -> None:
    """One heavy-ball step (B₁ = G) with no scaling: W₁ = W₀ − η·Ψ_p(G), Ψ_p by a float64 SVD."""
    gen = torch.Generator().manual_seed(0)
    W0, G = torch.randn(12, 20, generator=gen), torch.randn(12, 20, generator=gen)
    results = []
    for kwargs in ({"orthogonalizer": "svd"}, {"spectral_method": "svd"}):
        W = torch.nn.Parameter(W0.clone())
        opt = SpectralMuon(
            [{"params": [W], "branch": "muon"}], lr=0.1, power=power, direction="momentum",
            scale="none", **kwargs,
        )  # fmt: skip
        W.grad = G.clone()
        opt.step()
        results.append(W.detach().clone())
    expected = (W0.double() - 0.1 * svd_power(G, power)).float()
    for got in results:
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


@dataclass(frozen=True)
class Recording(Orthogonalizer):
    """The exact polar factor, recording the stack sizes it was called with."""

    calls: list[int] = field(default_factory=list, compare=False)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        self.calls.append(X.shape[0])
        return ExactPolar()(X)

    def flops(self, m: int, n: int, device: torch.device) -> int:
        return m * n


def test_an_orthogonalizer_object_is_used_as_given() -> None:
    ps = [torch.nn.Parameter(torch.randn(8, 24)) for _ in range(3)]
    orth = Recording()
    opt = Muon([{"params": ps, "branch": "muon"}], orthogonalizer=orth, scale="none", lr=1.0, momentum=0.0)
    grads = [torch.randn(8, 24) for _ in ps]
    before = [p.detach().clone() for p in ps]
    for p, g in zip(ps, grads, strict=True):
        p.grad = g
    opt.step()
    assert orth.calls == [3]  # one batched call for the bucket of three
    for p, b, g in zip(ps, before, grads, strict=True):  # momentum 0, Nesterov: X = G
        torch.testing.assert_close(p.detach(), b - svd_power(g, 0.0).float(), atol=1e-6, rtol=1e-6)


def test_a_step_written_against_the_interface_runs_on_the_local_executor() -> None:
    """A seventh algorithm needs only a MatrixStep: sign descent through the exact polar factor."""

    class SignStep(MatrixStep):
        def init_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
            return {}

        def begin(self, G: torch.Tensor, S: dict[str, torch.Tensor]) -> torch.Tensor:
            return G.sign()

        def finish(self, O: torch.Tensor, S: dict[str, torch.Tensor], ctx: MatrixContext) -> torch.Tensor:
            return O * ctx.matrix_sum(O.square()).rsqrt()  # unit Frobenius norm per matrix

    W = torch.nn.Parameter(torch.randn(6, 10))
    G = torch.randn(6, 10)
    W.grad = G.clone()
    state: dict = {W: {}}
    expected = W.detach() - 0.5 * (P := svd_power(G.sign(), 0.0).float()) / P.norm()
    with torch.no_grad():
        LocalExecutor().run(MatrixGroup([W], SignStep({}, ExactPolar()), state, lr=0.5))
    torch.testing.assert_close(W.detach(), expected, atol=1e-6, rtol=1e-6)
    assert int(state[W]["step"]) == 1


def test_max_bucket_numel_sets_the_batch_of_each_orthogonalizer_call() -> None:
    ps = [torch.nn.Parameter(torch.randn(8, 16)) for _ in range(5)]
    orth = Recording()
    opt = NorMuon([{"params": ps, "branch": "muon"}], orthogonalizer=orth, max_bucket_numel=2 * 8 * 16)
    for p in ps:
        p.grad = torch.randn(8, 16)
    opt.step()
    assert orth.calls == [2, 2, 1]


@pytest.mark.parametrize("part", ["engine", "distributed"])
def test_executors_never_test_orthogonalizer_names_or_powers(part: str) -> None:
    """They ask the orthogonalizer object (flops, result_dtype); names belong to core and optim."""
    for path in sorted((PACKAGE / part).glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ("svd", "power", "orthogonalizer"):
                raise AssertionError(f"{path.name}:{node.lineno} names {node.value!r}")
            if isinstance(node, ast.Attribute) and node.attr in ("_orthogonalize", "_direction", "_finalize"):
                raise AssertionError(f"{path.name}:{node.lineno} calls optimizer internals ({node.attr})")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_constructor_argument_reaches_the_cli_with_type_default_and_help(name: str) -> None:
    """jsonargparse (LightningCLI, YAML) sees the shared and engine arguments of every class."""
    from jsonargparse import ArgumentParser

    cls = OPTIMIZERS[name]
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "opt", skip={"params"})
    actions = {a.dest.removeprefix("opt."): a for a in parser._actions if a.dest.startswith("opt.")}
    signature = inspect.signature(cls)
    assert set(actions) == set(signature.parameters) - {"params"}
    defaults = parser.get_defaults().opt
    for arg, parameter in signature.parameters.items():
        if arg == "params":
            continue
        assert actions[arg].help, arg
        assert getattr(defaults, arg) == parameter.default, arg
    for shared in ("ns_eps", "ns_form", "max_bucket_numel", "compile_elementwise", "nonfinite"):
        assert shared in actions
    config = parser.parse_args(["--opt.ns_form", "fast", "--opt.max_bucket_numel", "4096"]).opt
    assert (config.ns_form, config.max_bucket_numel) == ("fast", 4096)
