r"""The reference tier: every algorithm of the package, one matrix at a time, written to be read.

The optimizer classes (the *fast tier*, :mod:`lightning_muon.optim`) stack same-shape matrices,
reuse buffers, route parameters and shard work across processes. This tier does none of that:

* :mod:`~lightning_muon.reference.linalg`: the matrix functions (exact polar factor and ``Ψ_p`` by
  SVD, Newton–Schulz, the coupled ``Ψ_½`` iteration, the scale rules), per matrix;
* :mod:`~lightning_muon.reference.algorithms`: one function per algorithm,
  ``update(G, state, hp) -> U``, in the papers' symbols;
* :mod:`~lightning_muon.reference.optimizer`: a loop that applies ``W ← W(1-ηλ) - ηU``.

It computes in float64 by default, takes the optimizers' own constructor arguments, and a parity
test runs it against the fast tier for every constructor variant of the registry
(:data:`lightning_muon.optim.registry.SPECS`). The test suite checks both against an independent
numpy oracle.

Example:
    >>> import torch
    >>> import lightning_muon as lm
    >>> from lightning_muon.optim.registry import spec_for
    >>> torch.manual_seed(0) and None
    >>> W, G = torch.randn(8, 12, dtype=torch.float64), torch.randn(8, 12, dtype=torch.float64)
    >>> p = torch.nn.Parameter(W.clone())
    >>> opt = lm.NorMuon([{"params": [p], "branch": "muon"}], orthogonalizer="svd")
    >>> p.grad = G.clone(); opt.step()
    >>> ref = spec_for("normuon").reference_optimizer([W], orthogonalizer="svd")
    >>> torch.allclose(p.detach(), ref.step([G])[0], rtol=0, atol=1e-12)
    True
"""

from .algorithms import ALGORITHMS
from .optimizer import ReferenceOptimizer, decoupled_step

__all__ = ["ALGORITHMS", "ReferenceOptimizer", "decoupled_step"]
