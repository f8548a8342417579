"""The adaptive 2-D lr grid: it brackets the optimum, extends only past the edge holding the best cell."""

from __future__ import annotations

import math

import pytest

from lightning_muon.benchmarks.efficiency_grid import Grid, best_cell, on_edge, search


def _bowl(centre):
    ci, cj = centre
    return lambda i, j: (i - ci) ** 2 + 0.5 * (j - cj) ** 2


def _evaluator(f, log):
    def evaluate(todo):
        log.append(list(todo))
        return {(label, c): f(*c) for label, c in todo}

    return evaluate


def test_a_centred_optimum_costs_the_starting_cross_only() -> None:
    log = []
    cells = search({"x": True}, _evaluator(_bowl((0, 0)), log), max_extensions=4)["x"]
    assert sorted(cells) == [(-1, 0), (0, -1), (0, 0), (0, 1), (1, 0)]
    assert len(log) == 1 and on_edge(cells, True) == []


@pytest.mark.parametrize("centre", [(3, -2), (-2, 0), (0, 4), (-3, -3)])
def test_a_far_optimum_is_found_and_bracketed_on_both_axes(centre) -> None:
    log = []
    cells = search({"x": True}, _evaluator(_bowl(centre), log), max_extensions=10)["x"]
    assert best_cell(cells) == centre
    i, j = centre
    for neighbour in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
        assert neighbour in cells  # bracketed on both axes
    assert on_edge(cells, True) == []
    # every extension round adds only missing neighbours of the best cell of the round before
    seen = {c for _, c in log[0]}
    for round_ in log[1:]:
        losses = {c: _bowl(centre)(*c) for c in seen}
        bi, bj = best_cell(losses)
        for _, (ci, cj) in round_:
            assert abs(ci - bi) + abs(cj - bj) == 1 and (ci, cj) not in seen
        seen |= {c for _, c in round_}
    assert len(cells) <= 5 + 3 * (abs(i) + abs(j))  # far fewer than the full rectangle


def test_one_d_grids_extend_along_the_lr_only() -> None:
    cells = search({"a": False}, _evaluator(lambda i, j: (i - 3) ** 2, []), max_extensions=5)["a"]
    assert sorted(cells) == [(i, 0) for i in range(-1, 5)]
    assert on_edge(cells, False) == []


def test_a_diverged_neighbour_brackets_the_optimum() -> None:
    f = lambda i, j: math.inf if i >= 2 else -i  # noqa: E731  (better as lr grows, until it diverges)
    cells = search({"x": True}, _evaluator(lambda i, j: f(i, j) + 0.1 * abs(j), []), 6)["x"]
    assert best_cell(cells) == (1, 0) and (2, 0) in cells and on_edge(cells, True) == []


def test_the_extension_limit_is_kept_and_reported() -> None:
    cells = search({"x": True}, _evaluator(_bowl((6, 0)), []), max_extensions=2)["x"]
    assert best_cell(cells) == (3, 0)
    assert "lr high" in on_edge(cells, True) and "lr low" not in on_edge(cells, True)


def test_several_grids_share_a_round() -> None:
    log = []
    search({"x": True, "y": False}, _evaluator(_bowl((0, 0)), log), max_extensions=2)
    assert len(log) == 1 and {label for label, _ in log[0]} == {"x", "y"} and len(log[0]) == 8


def test_grid_cells_are_absolute_lrs_turned_into_a_ratio() -> None:
    grid = Grid("muon", "muon", 0.02, 3e-4, {"scale": "keller"})
    name, lr, seed, kwargs = grid.job((1, -2), seed=5)
    assert (name, seed) == ("muon", 5) and lr == pytest.approx(0.04)
    assert lr * kwargs["adamw_lr_ratio"] == pytest.approx(7.5e-5)
    assert kwargs["scale"] == "keller"
    assert Grid("adamw", "adamw", 2e-3, None).job((-1, 0), 0) == ("adamw", 1e-3, 0, {})


def test_an_adamw_axis_search_keeps_the_matrix_lr_at_the_centre() -> None:
    cells = search({"x": "adamw"}, _evaluator(_bowl((2, -2)), []), max_extensions=5)["x"]
    assert {i for i, _ in cells} == {0} and best_cell(cells) == (0, -2)
    assert on_edge(cells, "adamw") == [] and on_edge(cells, "both") == ["lr low", "lr high"]
