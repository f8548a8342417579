"""gpu_check fails cleanly where there is no CUDA device, writing nothing."""

import subprocess
import sys

import pytest
import torch

from lightning_muon.benchmarks import gpu_check

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")


def test_no_cuda_device_exits_with_status_2_and_writes_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--out", str(tmp_path / "report")])
    assert exit_info.value.code == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_command_line_fails_cleanly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_muon.benchmarks.gpu_check", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_billion_set_is_about_a_billion_hidden_parameters():
    assert 1.1e9 < gpu_check.billion_set().hidden_numel < 1.3e9
