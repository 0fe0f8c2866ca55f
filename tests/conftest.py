import os

import pytest
import torch

# The machine has 2 cores shared with other processes; keep test runs predictable.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def gen():
    """A fresh CPU generator with a fixed seed."""
    return torch.Generator().manual_seed(0)
