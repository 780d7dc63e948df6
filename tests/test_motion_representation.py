"""The 28x28 u/v/strain image reproduces what the MEGC2019 composite PNGs show."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from engines.motion import flow_image, tvl1_flow
from tests.test_motion_tvl1 import load_biwoof_pair


def composite_pngs(shared_data):
    folder = shared_data / "HTNet" / "datasets" / "STSNet_whole_norm_u_v_os"
    files = sorted(folder.glob("*.png"))
    if len(files) != 442:
        pytest.skip(f"expected the 442 composite PNGs in {folder}")
    return np.stack([cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files])  # (442, 28, 28, 3) BGR


@pytest.mark.realdata
def test_composite_pngs_are_per_channel_minmax_images(shared_data):
    images = composite_pngs(shared_data)
    assert images.shape == (442, 28, 28, 3) and images.dtype == np.uint8
    assert (images.min(axis=(1, 2)) == 0).all() and (images.max(axis=(1, 2)) == 255).all()
    medians = np.median(images.reshape(-1, 3), axis=0)  # cv2 order: strain, v, u
    assert medians[0] < 40 and 100 < medians[1] < 170 and 100 < medians[2] < 170


def test_flow_image_spans_each_channel_and_orders_channels():
    flow = torch.stack((torch.linspace(-1, 2, 64).expand(64, 64), torch.full((64, 64), 0.5)))[None]
    flow[0, 1, 10:20, 10:20] = 1.0
    rgb = flow_image(flow)
    assert rgb.shape == (1, 3, 28, 28) and rgb.dtype == torch.float32
    assert torch.equal(rgb, torch.round(rgb))
    assert rgb.amin(dim=(2, 3)).tolist() == [[0.0, 0.0, 0.0]]
    assert rgb.amax(dim=(2, 3)).tolist() == [[255.0, 255.0, 255.0]]
    # u grows left to right: the first column is 0 and the last 255 in the u plane.
    assert rgb[0, 0, :, 0].eq(0).all() and rgb[0, 0, :, -1].eq(255).all()
    assert torch.equal(flow_image(flow, channel_order="bgr"), rgb.flip(1))


@pytest.mark.realdata
def test_flow_images_of_real_pairs_have_the_composite_statistics(shared_data):
    """Our image of a real onset/apex flow looks like the composite's: strain low, u/v mid."""
    torch.set_num_threads(1)
    gifs = sorted((shared_data / "biwoof").glob("*.gif"))
    if len(gifs) != 3:
        pytest.skip("expected the 3 biwoof GIFs")
    images = composite_pngs(shared_data)
    reference_median = np.median(images.reshape(-1, 3), axis=0)
    pairs = [load_biwoof_pair(g) for g in gifs]
    onset = torch.from_numpy(np.stack([p[0] for p in pairs]))
    apex = torch.from_numpy(np.stack([p[1] for p in pairs]))
    ours = flow_image(tvl1_flow(onset, apex), channel_order="bgr").permute(0, 2, 3, 1).numpy()
    assert (ours.min(axis=(1, 2)) == 0).all() and (ours.max(axis=(1, 2)) == 255).all()
    medians = np.median(ours.reshape(-1, 3), axis=0)
    assert medians[0] < 80  # strain: most of the face barely deforms
    assert abs(medians[1] - reference_median[1]) < 80 and abs(medians[2] - reference_median[2]) < 80
