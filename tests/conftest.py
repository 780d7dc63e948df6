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


@pytest.fixture(scope="session")
def engines(tmp_path_factory):
    """Every registered model exported once with seeded random weights: ``{name: engine_dir}``.
    Shared, so tests only read these directories."""
    from engines.export import export_model
    from engines.models import list_models
    from tests.test_export import make_model

    root = tmp_path_factory.mktemp("registered-engines")
    dirs = {}
    for name in list_models():
        dirs[name] = root / name
        export_model(make_model(name), dirs[name])
    return dirs


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module of small-tensor tests (more threads only contend on a
    shared CI machine, up to 10x slower); the previous count is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy_composite(tmp_path_factory):
    """A 36-sample composite (6 subjects, 2 per source dataset) whose classes differ by a bright band."""
    import numpy as np

    from training.datasets.sheets import write_composite_flow_images, write_composite_sheet
    from training.samples import Sample

    root = tmp_path_factory.mktemp("composite")
    rng = np.random.default_rng(7)
    samples, images = [], []
    for source, subjects in (("casme2", ["sub01", "sub02"]), ("smic", ["s01", "s02"]), ("samm", ["006", "007"])):
        for subject in subjects:
            for index in range(6):
                label = ("negative", "positive", "surprise")[index % 3]
                sample = Sample("megc2019-flow", subject, f"{subject}_{index}", label, labels={"megc3": label}, source=source)
                image = rng.integers(0, 90, (28, 28, 3)).astype(np.uint8)
                rows = slice(9 * (index % 3), 9 * (index % 3) + 9)  # class-specific band
                image[rows, :, :] += 150
                samples.append(sample)
                images.append((sample, image))
    write_composite_sheet(root / "combined_3_class2_for_optical_flow.csv", samples)
    write_composite_flow_images(root, images)
    return root
