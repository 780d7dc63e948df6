"""ROI boxes: the spotting regions and Dual-ATME's HARS boxes, from the 68 points."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamer.faces import FaceAligner, create_backend, hars_boxes, spotting_rois
from training.synthetic.sources import SOURCE_LOADERS


@pytest.fixture(scope="module")
def astronaut_points():
    image = cv2.cvtColor(SOURCE_LOADERS["astronaut"](), cv2.COLOR_RGB2BGR)
    return create_backend("dlib").detect(image)[0].points


def inside(point, box):
    x0, y0, x1, y1 = box
    return x0 <= point[0] < x1 and y0 <= point[1] < y1


def test_spotting_rois_cover_their_landmarks_on_a_real_face(astronaut_points):
    rois = spotting_rois(astronaut_points)
    assert set(rois) == {"left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "mouth", "nose"}
    groups = {
        "left_eyebrow": range(17, 22),
        "right_eyebrow": range(22, 27),
        "left_eye": range(36, 42),
        "right_eye": range(42, 48),
        "mouth": range(48, 60),
        "nose": range(29, 36),
    }
    for name, indices in groups.items():
        assert all(inside(astronaut_points[i], rois[name]) for i in indices), name
        assert all(isinstance(v, int) for v in rois[name])
    # Hand-measured on the photo (see test_faces_backends): pupils, nose tip, mouth corners.
    assert inside((204, 101), rois["left_eye"]) and inside((247, 103), rois["right_eye"])
    assert inside((224, 127), rois["nose"])
    assert inside((203, 140), rois["mouth"]) and inside((244, 141), rois["mouth"])
    assert rois["left_eyebrow"][2] <= rois["right_eyebrow"][0] + 2  # image-left brow is on the left
    assert rois["left_eyebrow"][3] <= rois["left_eye"][3]  # brows above the eye bottoms


def test_rois_in_aligned_crop_coordinates_are_clipped_to_the_crop(astronaut_points):
    aligned = FaceAligner(64).align(cv2.cvtColor(SOURCE_LOADERS["astronaut"](), cv2.COLOR_RGB2BGR), astronaut_points)
    for box in [*spotting_rois(aligned.points, size=(64, 64)).values(), *hars_boxes(aligned.points, (64, 64)).values()]:
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64


def test_hars_boxes_follow_the_paper_formulas():
    """Points placed so that every distance in the formulas is a round number."""
    p = np.zeros((68, 2))
    p[17], p[21], p[19], p[37] = (10, 20), (50, 20), (30, 12), (30, 52)  # left brow: l = 40, h = 40
    p[22], p[26], p[24], p[44] = (70, 20), (110, 20), (90, 12), (90, 32)  # right brow: l = 40, h = 20
    p[48], p[54], p[51], p[57], p[33] = (40, 100), (80, 100), (60, 92), (60, 110), (60, 80)  # mouth: l = 40, h = 12
    boxes = hars_boxes(p)
    assert boxes["left_eyebrow"] == (0, 2, 60, 42)  # rows [12 - 10, 52 - 10], cols [10 - 10, 50 + 10]
    assert boxes["right_eyebrow"] == (60, 7, 120, 27)  # rows [12 - 5, 32 - 5], cols [70 - 10, 110 + 10]
    assert boxes["mouth"] == (30, 86, 90, 116)  # rows [92 - 6, 110 + 6], cols [40 - 10, 80 + 10]
    assert hars_boxes(p, size=(100, 100))["right_eyebrow"] == (60, 7, 100, 27)


def test_boxes_round_outwards():
    p = np.zeros((68, 2))
    p[:, 0] = np.linspace(10.2, 90.7, 68)
    p[:, 1] = 50.5
    p[36], p[45] = (10.0, 50.0), (60.0, 50.0)  # outer eye corners 50 px apart
    nose = spotting_rois(p)["nose"]
    xs = p[29:36, 0]
    expected = (np.floor(xs.min() - 2.5), np.floor(50.5 - 2.5), np.ceil(xs.max() + 2.5), np.ceil(50.5 + 2.5))
    assert nose == tuple(int(v) for v in expected)
