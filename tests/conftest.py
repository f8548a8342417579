import os

import pytest
import torch

os.environ.setdefault("PYTHONHASHSEED", "0")
# The oracle tolerances of the suite are set for an fp32 Newton-Schulz; the default dtype otherwise
# depends on the machine (bf16 where it multiplies bf16 fast). Tests of that choice unset this.
os.environ.setdefault("LIGHTNING_MUON_NS_DTYPE", "float32")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
