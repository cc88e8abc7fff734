import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# The demo package lives in the repository, not in the installed distribution.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")

# pytest runs with --doctest-modules (pyproject.toml), which imports every .py file it collects. The scripts that
# tests start in subprocesses hold no examples, and importing them needs what they test (torchrec, for some).
collect_ignore_glob = ["scripts/*"]


@pytest.fixture
def data_root() -> Path:
    from demo_models.data.paths import data_root

    return data_root()


@pytest.fixture
def one_thread():
    """Run the test on one intra-op thread, then restore the count (tiny models only lose to thread contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
