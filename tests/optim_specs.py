"""One declaration per optimizer: the keyword arguments the generic tests use (OptimizerInfo-style)."""

from __future__ import annotations

from lightning_muon.optim.registry import OPTIMIZERS

#: Extra constructor arguments per optimizer for the generic tests (defaults otherwise).
TEST_KWARGS: dict[str, dict] = {
    "muon": {},
    "normuon": {},
    "adamuon": {},
    "muon_nsr": {},
    "muon_vs": {},
    "spectral_muon": {},
}

#: Constructor arguments that must be rejected, with the text the error names.
INVALID_ARGS: dict[str, list[tuple[dict, str]]] = {
    name: [
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"adamw_betas": (0.9, 1.0)}, "adamw_betas"),
        ({"adamw_eps": 0.0}, "adamw_eps"),
        ({"adamw_lr_ratio": -1.0}, "adamw_lr_ratio"),
        ({"orthogonalizer": "newton"}, "orthogonalizer"),
        ({"orthogonalizer": [(1.0, 2.0)]}, "orthogonalizer"),
        ({"ns_steps": 0}, "ns_steps"),
        ({"ns_steps": 100}, "ns_steps"),
        ({"ns_dtype": "int8"}, "ns_dtype"),
        ({"scale": "huge"}, "scale"),
        ({"nonfinite": "ignore"}, "nonfinite"),
        ({"vocab_size": 0}, "vocab_size"),
    ]
    for name in OPTIMIZERS
}
for _name in ("muon", "normuon", "adamuon", "muon_nsr", "muon_vs"):
    INVALID_ARGS[_name] += [
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.5}, "momentum"),
        ({"nesterov": "yes"}, "nesterov"),
    ]
INVALID_ARGS["normuon"] += [({"beta2": 1.5}, "beta2"), ({"eps": 0.0}, "eps")]
INVALID_ARGS["adamuon"] += [({"sign_stabilize": 1}, "sign_stabilize"), ({"eps": -1.0}, "eps")]
INVALID_ARGS["muon_nsr"] += [({"alpha": -1.0}, "alpha")]
INVALID_ARGS["spectral_muon"] += [
    ({"power": 0.3}, "power"),
    ({"direction": "sgd"}, "direction"),
    ({"betas": (1.2, 0.9)}, "betas"),
    ({"spectral_method": "eig"}, "spectral_method"),
]
INVALID_ARGS["spectral_muon"] = [
    (a, n) for a, n in INVALID_ARGS["spectral_muon"] if n != "scale"
] + [({"scale": "huge"}, "scale")]
