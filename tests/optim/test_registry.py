"""The registry's entries and its one name resolver."""

import pickle

import pytest
import torch

import lightning_muon as lm
from lightning_muon.optim.registry import (
    OPTIMIZERS,
    SPECS,
    OptimizerSpec,
    Variant,
    available_names,
    get_optimizer_class,
    spec_for,
)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("muon", lm.Muon),
        ("NorMuon", lm.NorMuon),
        ("NORMUON", lm.NorMuon),
        (" adamuon ", lm.AdaMuon),
        ("muon-nsr", lm.MuonNSR),
        ("Muon NSR", lm.MuonNSR),
        ("muonvs", lm.MuonVS),
        ("spectral", lm.SpectralMuon),
        ("lightning_muon.NorMuon", lm.NorMuon),
        ("lightning_muon.optim.spectral.SpectralMuon", lm.SpectralMuon),
        ("adamw", torch.optim.AdamW),
        ("AdamW", torch.optim.AdamW),
        ("torch.optim.AdamW", torch.optim.AdamW),
        (lm.MuonVS, lm.MuonVS),
        (torch.optim.AdamW, torch.optim.AdamW),
    ],
)
def test_names_aliases_class_names_paths_and_classes_resolve(name, cls):
    assert get_optimizer_class(name) is cls
    assert spec_for(name).cls is cls


def test_a_dotted_path_to_another_packages_optimizer_does_not_resolve_to_ours():
    """``torch.optim.Muon`` has other defaults than ``lightning_muon.Muon``: never a silent swap."""
    with pytest.raises(ValueError, match=r"'torch\.optim\.Muon' is not in the registry"):
        get_optimizer_class("torch.optim.Muon")
    with pytest.raises(ValueError, match="not in the registry"):
        spec_for("torch.optim.Muon")
    assert get_optimizer_class("torch.optim.Muon", import_paths=True) is torch.optim.Muon
    assert get_optimizer_class("torch.optim.SGD", import_paths=True) is torch.optim.SGD
    assert get_optimizer_class(torch.optim.SGD, import_paths=True) is torch.optim.SGD
    with pytest.raises(ValueError, match="torch.optim.sgd.SGD is not in the registry"):
        get_optimizer_class(torch.optim.SGD)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (None, r"Invalid optimizer name: None \(expected a registry name"),
        ("", r"Invalid optimizer name: '' \(expected"),
        ("   ", r"Invalid optimizer name: '   '"),
        (3, r"Invalid optimizer name: 3 \(expected"),
        ("nomuon", r"Invalid optimizer name: 'nomuon' \(unknown; valid names are muon, normuon"),
        (
            "torch.optim.NoSuch",
            r"'torch\.optim\.NoSuch' \(a dotted path, but it cannot be imported",
        ),
        ("no_such_module.Muon", r"'no_such_module\.Muon' \(a dotted path"),
        ("os.path", r"'os\.path' \(it names .*not a torch\.optim\.Optimizer class"),
        (int, r"Invalid optimizer: <class 'int'> is not a torch\.optim\.Optimizer class"),
    ],
)
def test_bad_names_raise_a_value_error_naming_the_value(name, message):
    with pytest.raises(ValueError, match=message):
        get_optimizer_class(name)
    with pytest.raises(ValueError, match=message):
        get_optimizer_class(name, import_paths=True)


def test_the_registry_lists_the_family_then_the_baseline():
    assert available_names() == [*OPTIMIZERS, "adamw"]
    assert available_names("muon") == list(OPTIMIZERS)
    assert available_names("baseline") == ["adamw"]
    assert OPTIMIZERS == {n: SPECS[n].cls for n in available_names("muon")}
    assert lm.OPTIMIZERS is OPTIMIZERS
    with pytest.raises(ValueError, match="Invalid family: 'adam'"):
        available_names("adam")


@pytest.mark.parametrize("name", available_names())
def test_every_entry_resolves_back_to_itself_by_every_spelling(name):
    spec = SPECS[name]
    for spelling in (spec.name, spec.cls.__name__, *spec.aliases, spec.cls):
        assert spec_for(spelling) is spec
    assert spec.family in ("muon", "baseline")
    assert issubclass(spec.cls, torch.optim.Optimizer)
    assert issubclass(spec.cls, lm.MuonFamilyOptimizer) == (spec.family == "muon")


@pytest.mark.parametrize("name", available_names())
def test_every_variant_constructs_and_its_hyperparameters_are_the_classes(name):
    spec = SPECS[name]
    for variant in spec.variants:
        hp = spec.hyperparameters(**variant.kwargs)
        for key, value in {**spec.settings, **variant.kwargs}.items():
            assert hp[key] == value or float(hp[key]) == value, (variant.label, key)
    p = torch.nn.Parameter(torch.zeros(3, 3))
    params = [{"params": [p], "branch": "muon"}] if spec.family == "muon" else [p]
    assert spec.hyperparameters() == spec.cls(params, **spec.settings).defaults


def test_the_adamw_baseline_carries_the_llm_settings():
    spec = spec_for("adamw")
    opt = spec.build([torch.nn.Parameter(torch.zeros(3, 3))])
    assert (opt.defaults["betas"], opt.defaults["weight_decay"], opt.defaults["lr"]) == (
        (0.9, 0.95),
        0.1,
        1e-3,
    )
    assert (
        spec.build([torch.nn.Parameter(torch.zeros(3))], weight_decay=0.0).defaults["weight_decay"]
        == 0.0
    )


def test_hyperparameters_are_validated_by_the_class():
    with pytest.raises(ValueError, match="Invalid momentum: 1.0"):
        spec_for("normuon").hyperparameters(momentum=1.0)
    with pytest.raises(ValueError, match="Invalid variant label: 'nope'"):
        spec_for("normuon").variant("nope")
    assert spec_for("normuon").variant("nesterov").kwargs == {"nesterov": True}


def test_a_spec_must_start_with_the_defaults_and_label_variants_once():
    base = dict(
        name="x", cls=torch.optim.SGD, family="baseline", reference=lambda *a: None, invalid=()
    )
    with pytest.raises(ValueError, match="first variant must be the defaults"):
        OptimizerSpec(variants=(Variant("fast", {"lr": 1.0}),), **base)
    with pytest.raises(ValueError, match="labels repeat"):
        OptimizerSpec(variants=(Variant("default"), Variant("a"), Variant("a")), **base)
    with pytest.raises(ValueError, match="Invalid family: 'other'"):
        OptimizerSpec(variants=(Variant("default"),), **{**base, "family": "other"})


def test_specs_are_frozen_and_picklable():
    spec = SPECS["muon"]
    with pytest.raises(AttributeError):
        spec.name = "other"
    assert pickle.loads(pickle.dumps(spec.variants)) == spec.variants
