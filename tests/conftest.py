"""Suite-wide rules: seeded tests, a clean working directory, and the fast lane.

* Every test starts from ``torch.manual_seed(0)``.
* A test must leave nothing behind in the directory pytest runs from: a ``checkpoints/`` or
  ``lightning_logs/`` folder (what Lightning writes when a Trainer has no ``default_root_dir``)
  or a ``runs/`` folder (the recipes' and how-tos' output) that appears during a test fails that
  test, naming the folder.
* ``python -m pytest -m "not slow"`` is the fast lane. Tests that spawn processes (marked
  ``distributed``) are slow by rule; :data:`SLOW` lists the other tests that took more than
  2.5 s on a quiet 2-core CPU (``python -m pytest --durations=50``); the end of a run lists
  unmarked tests that took over 5 s. CI runs everything.
"""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("PYTHONHASHSEED", "0")
# The oracle tolerances of the suite are set for an fp32 Newton-Schulz; the default dtype otherwise
# depends on the machine (bf16 where it multiplies bf16 fast). Tests of that choice unset this.
os.environ.setdefault("LIGHTNING_MUON_NS_DTYPE", "float32")

LEFTOVERS = ("checkpoints", "lightning_logs", "runs")
"""Folders Lightning creates in the current directory when nothing else is configured."""

SLOW = {
    "tests/benchmarks/test_step_speed_smoke.py",  # its module fixture runs the benchmark (7.6 s)
    "tests/diagnostics/test_diag_notebook.py::test_diagnostics_notebook_executes",
    "tests/lightning/test_cli.py::test_python_dash_m_entry_point_reports_errors_with_exit_status_2",
    "tests/lightning/test_cli.py::test_quickstart_recipe_runs_the_main_job",
    "tests/lightning/test_cli.py::test_resumed_run_extends_the_schedule",
    "tests/lightning/test_cli.py::test_the_command_offers_fit_and_validate_and_answers_help_without_lightning",
    "tests/lightning/test_processes.py::test_resume_in_a_new_process_continues_bit_identically",
    "tests/lightning/test_howto_docs.py::test_every_recipe_is_a_valid_configuration",
    "tests/lightning/test_howto_docs.py::test_howto_examples_run[main-job.md]",
    "tests/litgpt/test_litgpt_cli.py::test_stock_litgpt_pretrain_trains_the_tiny_recipe",
}
"""Node ids slower than 2.5 s: a parametrized test by its bare name covers every case, a file
every test in it."""


def _present(start: Path) -> set[str]:
    return {name for name in LEFTOVERS if (start / name).exists()}


def pytest_sessionstart(session):
    session.config._lightning_leftovers = (Path.cwd(), _present(Path.cwd()))


def pytest_sessionfinish(session, exitstatus):
    """Also catch folders written by module- or session-scoped fixtures (outside any test)."""
    start, before = session.config._lightning_leftovers
    new = sorted(_present(start) - before)
    if new:
        session.config.get_terminal_writer().line(
            f"ERROR: the test session left {', '.join(n + '/' for n in new)} in {start}", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


FAST_LANE_LIMIT_S = 5.0
"""A test outside the slow lane that takes longer than this is listed at the end of the run."""


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Name fast-lane tests that took more than FAST_LANE_LIMIT_S, so the lane stays fast (a busy
    machine can cause false alarms; compare with --durations on a quiet one before marking)."""
    slow = []
    for report in terminalreporter.stats.get("passed", []):
        fast = report.when == "call" and "slow" not in report.keywords
        if fast and report.duration > FAST_LANE_LIMIT_S:
            slow.append((report.duration, report.nodeid))
    if slow:
        terminalreporter.write_sep("-", f"fast-lane tests over {FAST_LANE_LIMIT_S:g} s")
        for duration, nodeid in sorted(slow, reverse=True):
            terminalreporter.write_line(f"{duration:6.1f} s  {nodeid}  (add it to SLOW?)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = {item.nodeid, item.nodeid.split("[", 1)[0], item.nodeid.split("::", 1)[0]}
        if item.get_closest_marker("distributed") or names & SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _leaves_no_lightning_folders():
    """Fail a test that writes Lightning's default folders into the starting directory."""
    start = Path.cwd()
    before = _present(start)
    yield
    new = sorted(_present(start) - before)
    assert not new, (
        f"the test left {', '.join(new)}/ in {start}: give the Trainer a default_root_dir "
        "(e.g. tmp_path) or run it from tmp_path"
    )
