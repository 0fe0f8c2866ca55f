import os

import pytest
import torch

# One intra-op thread: the test models are tiny, so a second OpenMP thread costs more in
# synchronisation than it gains, and on a busy 2-core machine it waits for a core in every
# parallel region (micro models ran ~100x slower with two).
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def gen():
    """A fresh CPU generator with a fixed seed."""
    return torch.Generator().manual_seed(0)
