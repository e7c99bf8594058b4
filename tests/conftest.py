import os

import pytest
import torch

# Tests run on 2 shared cores: one intra-op thread is faster and keeps runs comparable.
torch.set_num_threads(1)
os.environ.setdefault("KDPC_NO_PROGRESS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
