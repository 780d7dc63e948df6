"""An engine exported from a released checkpoint agrees with torch on all 442 composite images.

The release's ``STSTNet_Weights/sub01.pth`` (legacy torch format, read by the safe reader) is
exported with ``mer export``'s code path; ONNX Runtime and the torch backend then score the
MEGC2019 composite's 442 motion images, read by the project's own dataset reader and input
path. Probabilities must agree within 1e-4 and every argmax must be equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engines.checkpoints import load_weights
from engines.export import export_checkpoint
from engines.models import create_model
from engines.runtime import load
from training.datasets import load_dataset
from training.inputs import load_motion_images

pytestmark = pytest.mark.realdata

MODEL = "ststnet"  # the released checkpoints are STSTNet's


@pytest.fixture(scope="module")
def paths(shared_data: Path) -> tuple[Path, Path]:
    checkpoint = shared_data / "STSTNet" / "STSTNet_Weights" / "sub01.pth"
    composite = shared_data / "HTNet"
    if not checkpoint.is_file() or not composite.is_dir():
        pytest.skip(f"STSTNet release weights or HTNet composite images not found under {shared_data}")
    return checkpoint, composite


@pytest.fixture(scope="module")
def images(paths) -> np.ndarray:
    samples = load_dataset("megc2019-flow", root=paths[1])
    return load_motion_images(samples).numpy()


@pytest.fixture(scope="module")
def engine_dir(paths, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sub01_engine")
    export_checkpoint(paths[0], out, model_name=MODEL, overwrite=True)
    return out


def test_all_442_composite_images_are_read(images: np.ndarray) -> None:
    assert images.shape == (442, 3, 28, 28)
    assert images.min() == 0.0 and images.max() == 255.0


def test_onnxruntime_matches_torch_on_the_composite(engine_dir: Path, images: np.ndarray) -> None:
    ort_scores = load(engine_dir, "onnxruntime").predict(images)
    torch_scores = load(engine_dir, "torch").predict(images)
    assert ort_scores.shape == torch_scores.shape == (442, 3)
    assert float(np.abs(ort_scores - torch_scores).max()) <= 1e-4
    np.testing.assert_array_equal(ort_scores.argmax(axis=1), torch_scores.argmax(axis=1))


def test_engine_equals_the_checkpoint_applied_directly(paths, engine_dir: Path, images: np.ndarray) -> None:
    model = load_weights(create_model(MODEL), paths[0]).eval()
    with torch.inference_mode():
        reference = torch.softmax(model(torch.from_numpy(images)), dim=1).numpy()
    engine = load(engine_dir, "onnxruntime")
    assert engine.manifest.data["source"]["checkpoint"] == "sub01.pth"
    np.testing.assert_allclose(load(engine_dir, "torch").predict(images), reference, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(engine.predict(images).argmax(axis=1), reference.argmax(axis=1))
