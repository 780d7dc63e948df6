"""Shared pytest fixtures.

Real (licensed) data is never part of the repository: tests that need it read it from
``../shared/data`` beside the clone, or from ``$MER_DATA``, and skip when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    return Path(os.environ.get("MER_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The licensed datasets folder; skips the test when it is not present."""
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set MER_DATA to run this test)")
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module of small-tensor tests (more threads only contend on a
    shared CI machine, up to 10x slower); the previous count is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
