"""engines.preprocess: the manifest's preprocessing block, followed exactly."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engines.errors import InputError
from engines.manifest import preprocessing_signature
from engines.models import create_model
from engines.motion import compute_flow, flow_image
from engines.preprocess import MotionInputBuilder

FAST_TVL1 = {"nscales": 2, "warps": 2, "inner_iterations": 5, "outer_iterations": 2}


def _pair(size=48, shift=1, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size + 8, size + 8)).astype(np.float32)
    base = np.asarray(torch.nn.functional.avg_pool2d(torch.from_numpy(base)[None, None], 3, 1, 1)[0, 0])
    onset = base[4:-4, 4:-4].astype(np.uint8)
    apex = base[4:-4, 4 - shift : size + 4 - shift].astype(np.uint8)
    return onset, apex


def test_builder_matches_the_kernels_it_names():
    cfg = create_model("ststnet").cfg
    signature = preprocessing_signature(cfg, "tvl1", FAST_TVL1, (32, 32))
    onset, apex = _pair()
    built = MotionInputBuilder(signature)(onset[None], apex[None])
    # By hand: area-resize to the flow size, TV-L1 with those parameters, composite image in BGR order.
    small = [F.interpolate(torch.from_numpy(x).float()[None, None] / 255.0, size=(32, 32), mode="area")[0]
             for x in (onset, apex)]
    flow = compute_flow("tvl1", small[0], small[1], **FAST_TVL1)
    expected = flow_image(flow, size=28, channel_order="bgr")
    assert built.shape == (1, 3, 28, 28) and built.dtype == torch.float32
    assert torch.equal(built, expected)
    # STSTNet's planes are (strain, v, u): the builder follows the manifest's channel names.
    assert signature["channels"] == ["optical_strain", "v", "u"]


def test_builder_without_flow_size_uses_the_crop_as_given():
    cfg = create_model("ststnet").cfg
    signature = preprocessing_signature(cfg, "opencv-farneback", {})
    assert signature["flow_size"] is None
    onset, apex = _pair(size=40)
    built = MotionInputBuilder(signature)(onset[None], apex[None])
    flow = compute_flow("opencv-farneback", torch.from_numpy(onset)[None], torch.from_numpy(apex)[None])
    assert torch.equal(built, flow_image(flow, size=28, channel_order="bgr"))


def test_builder_applies_mean_and_std():
    cfg = create_model("ststnet").cfg
    signature = preprocessing_signature(cfg, "opencv-farneback", {})
    signature.update(mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 5.0])
    onset, apex = _pair(size=40)
    raw = MotionInputBuilder({**signature, "mean": None, "std": None})(onset[None], apex[None])
    normalised = MotionInputBuilder(signature)(onset[None], apex[None])
    mean = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    std = torch.tensor([2.0, 4.0, 5.0]).view(1, 3, 1, 1)
    assert torch.allclose(normalised, (raw - mean) / std)


@pytest.mark.parametrize(
    ("change", "column"),
    [
        ({"flow_method": "magic"}, "preprocessing.flow_method"),
        ({"channels": ["u", "v", "difference"]}, "preprocessing.channels"),
        ({"value_range": [-1.0, 1.0]}, "preprocessing.value_range"),
        ({"size": [28, 32]}, "preprocessing.size"),
    ],
)
def test_builder_refuses_what_it_cannot_follow(change, column):
    signature = {**preprocessing_signature(create_model("ststnet").cfg, "tvl1", FAST_TVL1), **change}
    with pytest.raises(InputError) as caught:
        MotionInputBuilder(signature)
    assert caught.value.column == column


def test_builder_names_a_missing_field():
    signature = preprocessing_signature(create_model("ststnet").cfg, "tvl1", FAST_TVL1)
    del signature["channels"]
    with pytest.raises(InputError, match="preprocessing.channels"):
        MotionInputBuilder(signature)
