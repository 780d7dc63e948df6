"""FlowSpotter on a controlled picture: a moving mouth is spotted, a moving head is not."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from streamer.faces.rois import SPOTTING_GROUPS, spotting_box_array, spotting_rois
from streamer.spotting import create_spotter, load_spot_params
from streamer.spotting.flow_spotter import BOX_NAMES, _fit_layout, _layout
from training.synthetic.layouts import subject_identity
from training.synthetic.settings import SynthSettings

SIZE = 128
FPS = 30.0


@pytest.fixture(scope="module")
def face():
    """A 128x128 textured 'crop' and 68 landmarks of a real face layout (the synthetic subject 0)."""
    points = subject_identity(0, 0, (SIZE, SIZE), SynthSettings(), "001").landmarks.astype(np.float32)
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (SIZE, SIZE)).astype(np.float32), (0, 0), 1.5)
    texture = cv2.normalize(texture, None, 20, 235, cv2.NORM_MINMAX)
    return texture, points


def render(texture, points, mouth_shift: float, head_shift: float, noise_rng) -> np.ndarray:
    """Shift the mouth box down by ``mouth_shift`` px and everything right by ``head_shift`` px."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    x0, y0, x1, y1 = spotting_rois(points)["mouth"]
    inside = ((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)).astype(np.float32)
    weight = cv2.GaussianBlur(inside, (0, 0), 3)
    map_x = xs - head_shift
    map_y = ys - mouth_shift * weight
    image = cv2.remap(texture, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    image = image + noise_rng.normal(0, 1.0, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def test_mouth_motion_is_spotted_and_head_motion_is_not(face):
    texture, points = face
    spotter = create_spotter(load_spot_params(), FPS)
    noise = np.random.default_rng(1)
    found, signal = [], []
    for i in range(240):
        mouth = 2.0 * (1 - math.cos(2 * math.pi * (i - 90) / 9)) / 2 if 90 <= i <= 99 else 0.0
        head = 3.0 * min(1.0, max(0.0, (i - 150) / 10))  # a head move that stays
        found += spotter.push(render(texture, points, mouth, head, noise), i / FPS, i, points)
        signal.append(spotter.signal)
    found += spotter.flush()
    assert len(found) == 1
    interval = found[0]
    assert 89 <= interval.onset <= 92 and 97 <= interval.offset <= 100 and interval.kind == "micro"
    assert 0.3 < interval.intensity < 2.0  # mean motion over the mouth box: below the 2 px peak
    assert max(signal[90:100]) > 5 * max(signal[150:240])  # nose-relative global motion cancels the head move
    assert spotter.look_ahead_s == 0.3


def test_after_an_expression_the_motion_is_measured_from_its_end(face):
    """The mouth moves 2 px and comes back only to 0.2 px (the face need not return exactly to where
    it was): the residual 0.2 px would stay above the threshold forever if the motion were still
    measured from the frame before the expression, and the region would never end. The region is
    released at a fifth of its peak and the reference moves to its end."""
    texture, points = face
    spotter = create_spotter(load_spot_params(), FPS)
    noise = np.random.default_rng(1)
    found, signal = [], []
    for i in range(240):
        if i < 90:
            mouth = 0.0
        elif i <= 94:
            mouth = 2.0 * (1 - math.cos(math.pi * (i - 90) / 4)) / 2
        elif i <= 99:
            mouth = 0.2 + 1.8 * (1 + math.cos(math.pi * (i - 94) / 5)) / 2
        else:
            mouth = 0.2
        found += spotter.push(render(texture, points, mouth, 0.0, noise), i / FPS, i, points)
        signal.append(spotter.signal)
    found += spotter.flush()
    assert [(i.onset, i.apex, i.offset) for i in found] == [(90, 94, 99)]
    assert max(signal[110:]) < 0.05 * max(signal)  # measured from the new reference: the 0.2 px is gone


def test_uniform_lbp_codes_and_block_histograms():
    from streamer.spotting.lbp_spotter import N_BINS, LbpFeatures, uniform_lut

    lut = uniform_lut()
    assert len(set(lut.tolist())) == N_BINS and (lut < N_BINS - 1).sum() == 58
    assert lut[0] == 0 and lut[0b01010101] == N_BINS - 1  # flat is uniform; alternating bits are not
    features = LbpFeatures(32, 4)
    out = features.compute(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8), np.zeros((16, N_BINS)))
    assert np.allclose(out.sum(axis=1), 1.0)
    flat = features.compute(np.full((32, 32), 7, np.uint8), np.zeros((16, N_BINS)))
    assert np.all(flat[:, lut[255]] == 1.0)  # every neighbour >= centre: code 255 everywhere


def test_lbp_spotter_finds_a_furrow_appearing(face):
    """LBP histograms barely change when a texture shifts (they are shift-invariant inside a block);
    they change when the appearance does: here a furrow darkens across the mouth for 0.3 s."""
    texture, points = face
    spotter = create_spotter(load_spot_params("configs/spot/lbp.toml"), FPS)
    noise = np.random.default_rng(1)
    x0, y0, x1, y1 = spotting_rois(points)["mouth"]
    found = []
    for i in range(240):
        strength = (1 - math.cos(2 * math.pi * (i - 90) / 9)) / 2 if 90 <= i <= 99 else 0.0
        image = render(texture, points, 0.0, 0.0, noise).astype(np.float32)
        for row in range(y0 + 2, y1 - 2, 6):
            image[row:row + 2, x0:x1] -= 80 * strength
        found += spotter.push(np.clip(image, 0, 255).astype(np.uint8), i / FPS, i, points)
    found += spotter.flush()
    assert [86 <= f.apex <= 103 for f in found] == [True]
    assert spotter.look_ahead_s == pytest.approx(0.3 + 2 * 3 / FPS)


def _boxes_as_defined(points: np.ndarray, size: int, brow_eye_gap: float) -> dict:
    """The spotter's boxes by their plain definition (numpy and Python's round), which the compiled
    ``_layout`` must reproduce exactly: the same boxes give the same signal."""
    p = points.astype(np.float64)
    interocular = float(np.hypot(*(p[45] - p[36])))

    def clip(box):
        x0, y0, x1, y1 = box
        x0, y0 = min(max(int(round(x0)), 0), size - 2), min(max(int(round(y0)), 0), size - 2)
        return x0, y0, max(min(int(round(x1)), size), x0 + 2), max(min(int(round(y1)), size), y0 + 2)

    boxes = {}
    for name, (indices, (mx, my)) in SPOTTING_GROUPS.items():
        group = p[list(indices)]
        boxes[name] = clip((math.floor(group[:, 0].min() - mx * interocular),
                            math.floor(group[:, 1].min() - my * interocular),
                            math.ceil(group[:, 0].max() + mx * interocular),
                            math.ceil(group[:, 1].max() + my * interocular)))
    lid_top = float(points[[37, 38, 43, 44], 1].min()) - brow_eye_gap * size
    for name in ("left_eyebrow", "right_eyebrow"):
        x0, y0, x1, y1 = boxes[name]
        boxes[name] = (x0, y0, x1, max(y0 + 2, min(y1, int(lid_top))))
    x0, y0, x1, y1 = boxes["mouth"]
    middle = min(max(int(round(float(points[[51, 57, 62, 66], 0].mean()))), x0 + 2), x1 - 2)
    boxes["mouth_left"], boxes["mouth_right"] = (x0, y0, middle, y1), (middle, y0, x1, y1)
    chin = points[[7, 8, 9]]
    bottom = y1 + 0.6 * (float(points[8, 1]) - y1)
    boxes["chin"] = clip((chin[:, 0].min(), y1, chin[:, 0].max(), bottom))
    return boxes


def test_the_compiled_boxes_are_the_defined_ones_rounding_included(face):
    _, points = face
    rng = np.random.default_rng(3)
    cases = [points]
    for _ in range(300):  # jittered, moved and scaled faces, some half off the crop
        moved = points * rng.uniform(0.7, 1.3) + rng.uniform(-40, 40, 2) + rng.normal(0, 1.5, points.shape)
        cases.append(moved.astype(np.float32))
    for _ in range(100):  # coordinates on whole and half pixels: ties that round half to even
        cases.append((np.round(points * 2 + rng.integers(-3, 4, points.shape)) / 2).astype(np.float32))
    for case in cases:
        for gap in (0.04, 0.0, 0.13):
            expected = _boxes_as_defined(case, SIZE, gap)
            got = dict(zip(BOX_NAMES, map(tuple, _layout(case, spotting_box_array(case), SIZE, gap).tolist())))
            assert got == expected
    assert _boxes_as_defined(np.full((68, 2), 2.5, np.float32), SIZE, 0.0)["chin"][0] == 2  # a tie went to even


def test_the_compiled_fit_grid_is_the_defined_one(face):
    """``_fit_layout``: the face outline on the 4-px grid (np.round, half to even) and the excluded
    boxes widened by the margin, each edge at the first grid sample at or past it."""
    _, points = face
    rng = np.random.default_rng(4)
    for _ in range(200):
        case = (points * rng.uniform(0.8, 1.2) + rng.normal(0, 2.0, points.shape)).astype(np.float32)
        if rng.random() < 0.5:
            case = (np.round(case * 2) / 2).astype(np.float32)  # ties on the grid
        boxes = _layout(case, spotting_box_array(case), SIZE, 0.04)[:5]
        margin = float(rng.uniform(0, 0.1))
        polygon, rectangles = _fit_layout(case, boxes, SIZE, margin)
        outline = np.concatenate([case[:17], case[26:16:-1] - (0.0, 0.1 * SIZE)])
        np.testing.assert_array_equal(polygon, np.round(outline / 4 - 0.5).astype(np.int32))
        m = margin * SIZE
        expected = [[max(0, math.ceil((v - 2) / 4)) for v in (x0 - m, y0 - m, x1 + m, y1 + m)]
                    for x0, y0, x1, y1 in boxes.tolist()]
        assert rectangles.tolist() == expected
