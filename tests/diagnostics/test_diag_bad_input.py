"""Bad input: unknown patterns raise before training; non-matrices, no grads, NaN, resumed runs
never stop it."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_muon.callbacks import SpectrumMonitor, UpdateNormMonitor
from lightning_muon.callbacks._selection import select_parameters


@pytest.fixture
def info_log(caplog: pytest.LogCaptureFixture) -> Any:
    """Lightning's logger does not propagate to the root logger: attach caplog's handler to it."""
    logger = logging.getLogger("lightning.pytorch")
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every_n_steps": 0}, "every_n_steps must be a positive int, got 0"),
        ({"every_n_steps": 2.5}, "every_n_steps"),
        ({"max_params": 0}, "max_params must be a positive int or None, got 0"),
        ({"params": []}, "params must be None or a non-empty list"),
        ({"params": ["fc1.*", ""]}, "params must be None"),
        ({"max_history": -1}, "max_history"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UpdateNormMonitor(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sources": ["update", "gradient"]}, r"sources must be a non-empty subset .* 'gradient'"),
        ({"top_k": -1}, "top_k must be an int >= 0, got -1"),
        ({"every_n_steps": 10, "image_every_n_steps": 15}, "multiple of every_n_steps=10, got 15"),
        ({"compute_dtype": "float16"}, "compute_dtype must be one of"),
    ],
)
def test_spectrum_constructor_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SpectrumMonitor(**kwargs)


def test_unknown_pattern_raises_naming_it_and_the_available_names(
    tiny_lm: Any, trainer_kwargs: dict[str, Any]
) -> None:
    model = tiny_lm()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    monitor = UpdateNormMonitor(every_n_steps=1, params=["transformer.*", "fc2.weight"])
    trainer = pl.Trainer(max_steps=2, logger=False, callbacks=[monitor], **trainer_kwargs)
    with pytest.raises(
        ValueError,
        match=r"params pattern 'transformer\.\*' matches no parameter.*fc1\.weight, fc2\.weight",
    ):
        trainer.fit(model)
    assert trainer.global_step == 0 and monitor.records == []
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_pattern_of_a_broken_yaml_list_gets_a_hint(tiny_lm: Any) -> None:
    """``params='[*.fc2.weight]'`` reaches the callback as one string: say how to quote it."""
    model = tiny_lm()
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match=r"'\[\*\.fc2\.weight\]' matches no parameter.*quote"):
        select_parameters(model, [opt], ["[*.fc2.weight]"], max_params=None)


def test_patterns_selecting_no_matrix_raise(tiny_lm: Any, trainer_kwargs: dict[str, Any]) -> None:
    monitor = SpectrumMonitor(every_n_steps=1, params="*.bias")
    trainer = pl.Trainer(max_steps=1, logger=False, callbacks=[monitor], **trainer_kwargs)
    with pytest.raises(
        ValueError, match=r"select no optimized matrix \(.*'fc1.bias'.*not a matrix"
    ):
        trainer.fit(tiny_lm())
    assert monitor.records == [] and trainer.global_step == 0


def test_non_matrix_and_frozen_parameters_are_skipped_with_message(tiny_lm: Any) -> None:
    model = tiny_lm()
    model.fc2.weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    sel = select_parameters(model, [opt], ["fc*"], max_params=None, owner="M")
    assert [n for n, _ in sel.params] == ["fc1.weight"]
    text = "\n".join(sel.infos)
    assert "skipping 'fc1.bias' (shape (24,)): not a matrix" in text
    assert "skipping 'fc2.weight': it is frozen or not in any optimizer" in text


def test_default_selection_prefers_muon_branch_and_caps(tiny_lm: Any) -> None:
    model = tiny_lm()
    groups = [
        {"params": [model.fc2.weight, model.fc1.weight], "branch": "muon"},
        {
            "params": [
                p for n, p in model.named_parameters() if not n.startswith(("fc1.w", "fc2.w"))
            ],
            "branch": "adamw",
        },
    ]
    sel = select_parameters(model, [torch.optim.AdamW(groups)], None, max_params=None)
    assert [n for n, _ in sel.params] == ["fc1.weight", "fc2.weight"]  # model order
    sel = select_parameters(model, [torch.optim.AdamW(groups)], None, max_params=1)
    assert [n for n, _ in sel.params] == ["fc1.weight"]
    assert "watching 1 of 2 parameters" in sel.infos[0]


def test_parameter_without_gradient_is_reported(
    tiny_lm: Any, trainer_kwargs: dict[str, Any]
) -> None:
    monitor = UpdateNormMonitor(every_n_steps=1, params=["unused.weight", "fc1.weight"])
    trainer = pl.Trainer(max_steps=2, logger=False, callbacks=[monitor], **trainer_kwargs)
    with pytest.warns(UserWarning, match=r"'unused.weight' has no gradient at step 0"):
        trainer.fit(tiny_lm(unused_layer=True))
    assert {r.param for r in monitor.records} == {"fc1.weight"}


class PoisoningSGD(torch.optim.SGD):
    """SGD that writes NaN into one row of ``target`` at step ``at``."""

    def __init__(self, params: Any, target: torch.Tensor, at: int) -> None:
        super().__init__(params, lr=0.1)
        self.target, self.at, self.n = target, at, 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = super().step(closure)
        self.n += 1
        if self.n == self.at:
            self.target[3, 0] = float("nan")
        return loss


def test_nonfinite_update_is_reported_and_skipped(
    tiny_lm: Any, trainer_kwargs: dict[str, Any]
) -> None:
    model = tiny_lm()
    model.optimizer_factory = lambda m: PoisoningSGD(m.parameters(), m.fc1.weight, at=2)
    updates = UpdateNormMonitor(every_n_steps=1, params="fc1.weight")
    spectra = SpectrumMonitor(every_n_steps=1, params="fc1.weight", sources=["update", "weight"])
    trainer = pl.Trainer(max_steps=3, logger=False, callbacks=[updates, spectra], **trainer_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model)
    text = "\n".join(str(w.message) for w in caught)
    assert "1 of 24 rows of the update of 'fc1.weight' are non-finite at step 1" in text
    assert "the update of 'fc1.weight' has 1 non-finite entries at step 1" in text
    assert trainer.global_step == 3
    at2 = next(r for r in updates.records if r.step == 1)
    assert at2.stats.rows.num_nonfinite == 1 and at2.stats.rows.mean > 0
    assert {(r.step, r.source) for r in spectra.records} == {(0, "update"), (0, "weight")}


def test_resume_restores_history(
    tiny_lm: Any, trainer_kwargs: dict[str, Any], info_log: Any
) -> None:
    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    ckpt = ModelCheckpoint(
        dirpath=kwargs["default_root_dir"], filename="{step}", save_top_k=-1, every_n_train_steps=2
    )
    first = [
        UpdateNormMonitor(every_n_steps=2),
        SpectrumMonitor(every_n_steps=2, sources=["update"]),
    ]
    pl.Trainer(max_steps=4, logger=False, callbacks=[*first, ckpt], **kwargs).fit(tiny_lm())
    path = f"{kwargs['default_root_dir']}/step=4.ckpt"

    again = [
        UpdateNormMonitor(every_n_steps=2),
        SpectrumMonitor(every_n_steps=2, sources=["update"]),
    ]
    trainer = pl.Trainer(max_steps=6, logger=False, callbacks=again, **kwargs)
    trainer.fit(tiny_lm(), ckpt_path=path)
    assert sorted({r.step for r in again[0].records}) == [1, 3, 5]
    assert again[0].records[:4] == first[0].records
    assert again[1].records[:4] == first[1].records
    assert "restored 4 history record(s)" in info_log.text

    # resuming from an earlier checkpoint drops the history after it
    later = UpdateNormMonitor(every_n_steps=2)
    trainer = pl.Trainer(max_steps=4, logger=False, callbacks=[later], **kwargs)
    later.records = list(first[0].records)
    trainer.fit(tiny_lm(), ckpt_path=f"{kwargs['default_root_dir']}/step=2.ckpt")
    assert sorted({r.step for r in later.records}) == [1, 3]


def test_resume_from_checkpoint_without_callback_state(
    tiny_lm: Any, trainer_kwargs: dict[str, Any], info_log: Any
) -> None:
    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    ckpt = ModelCheckpoint(dirpath=kwargs["default_root_dir"], filename="plain")
    pl.Trainer(max_steps=2, logger=False, callbacks=[ckpt], **kwargs).fit(tiny_lm())
    monitor = UpdateNormMonitor(every_n_steps=1)
    trainer = pl.Trainer(max_steps=3, logger=False, callbacks=[monitor], **kwargs)
    trainer.fit(tiny_lm(), ckpt_path=f"{kwargs['default_root_dir']}/plain.ckpt")
    assert "holds no state for this callback" in info_log.text
    assert {r.step for r in monitor.records} == {2}


def test_malformed_state_is_reported_not_raised() -> None:
    monitor = UpdateNormMonitor()
    with pytest.warns(UserWarning, match="could not restore the history"):
        monitor.load_state_dict({"version": 1, "records": [{"step": 1}]})
    with pytest.warns(UserWarning, match="unsupported state version 99"):
        monitor.load_state_dict({"version": 99, "records": []})
    assert monitor.records == []
