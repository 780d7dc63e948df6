"""Alignment puts faces where the papers do, and its temporal smoothing steadies the crop only.

Jitter is measured on a still photo with fresh sensor noise on every frame: the landmarks
jitter, a steady alignment should not.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.errors import InputError
from streamer.faces import FaceAligner, FaceTracker, create_backend
from streamer.faces.alignment import AFFINE3_TEMPLATE
from streamer.frames import Frame
from training.synthetic.sources import SOURCE_LOADERS


@pytest.fixture(scope="module")
def astronaut():
    """The astronaut photo (BGR) and its dlib landmarks."""
    image = cv2.cvtColor(SOURCE_LOADERS["astronaut"](), cv2.COLOR_RGB2BGR)
    return image, create_backend("dlib").detect(image)[0].points


def rotate(image, points, degrees):
    centre = (image.shape[1] / 2, image.shape[0] / 2)
    matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    turned = cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR)
    return turned, (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def test_affine3_puts_the_eye_corner_midpoints_on_the_template_upright(astronaut):
    image, points = astronaut
    aligned = FaceAligner(128).align(image, points)
    assert aligned.gray.shape == (128, 128) and aligned.gray.dtype == np.uint8
    assert aligned.points.shape == (68, 2) and aligned.points.dtype == np.float32
    p = aligned.points
    eyes = np.stack([(p[36] + p[39]) / 2, (p[42] + p[45]) / 2])
    np.testing.assert_allclose(eyes, AFFINE3_TEMPLATE[:2] * 128, atol=1e-3)
    # A similarity: the image's face is not sheared or squashed, only turned, scaled and moved.
    linear = aligned.matrix[:, :2]
    np.testing.assert_allclose(linear @ linear.T, np.eye(2) * np.linalg.det(linear), rtol=1e-5, atol=1e-5)


def test_affine3_ignores_blinks_and_the_nose(astronaut):
    image, points = astronaut
    moved = points.copy()
    moved[[37, 38, 43, 44]] += (0, 4)  # lids close
    moved[31:36] += (0, -3)  # nose wrinkles
    aligner = FaceAligner(128)
    np.testing.assert_array_equal(aligner.align(image, points).matrix, aligner.align(image, moved).matrix)


def test_eyes_method_levels_the_outer_eye_corners_and_crops_by_landmarks(astronaut):
    image, points = astronaut
    turned, turned_points = rotate(image, points, 12.0)
    p = FaceAligner(96, "eyes").align(turned, turned_points).points
    assert p[36, 1] == pytest.approx(p[45, 1], abs=1e-3)  # level eye line
    assert p[1, 0] == pytest.approx(0, abs=1e-3) and p[15, 0] == pytest.approx(96, abs=1e-3)  # jaw sides
    assert p[8, 1] == pytest.approx(96, abs=1e-3)  # chin at the bottom
    raise_top = ((p[38, 1] - p[20, 1]) + (p[43, 1] - p[23, 1])) / 2
    assert p[19, 1] - raise_top == pytest.approx(0, abs=1e-3)  # Dual-ATME Eq. 2 top edge


@pytest.mark.parametrize("method", ["affine3", "eyes"])
def test_a_rolled_head_gives_the_same_aligned_face(astronaut, method):
    image, points = astronaut
    aligner = FaceAligner(128, method)
    upright = aligner.align(image, points).gray.astype(np.float32)
    turned = aligner.align(*rotate(image, points, -15.0)).gray.astype(np.float32)
    assert np.abs(upright - turned)[16:-16, 16:-16].mean() < 6.0  # grey levels; unrelated faces differ by ~40
    assert np.corrcoef(upright.ravel(), turned.ravel())[0, 1] > 0.95


def test_bad_settings_are_clear_errors():
    with pytest.raises(InputError, match="unknown alignment method 'similarity'"):
        FaceAligner(128, "similarity")
    with pytest.raises(InputError, match="at least 16"):
        FaceAligner(8)


def crop_jitter(frames, aligner):
    """Frame-to-frame RMS movement (crop pixels) of the crop transform and of the aligned landmarks."""
    tracker = FaceTracker(create_backend("dlib"), aligner, detect_interval_s=10.0)
    matrices, aligned_points, image_points = [], [], []
    for index, image in enumerate(frames):
        (face,) = tracker.update(Frame(index, index / 30, image, 0.0))
        matrices.append(face.aligned.matrix)
        aligned_points.append(face.aligned.points)
        image_points.append(face.landmarks.points)
    reference = image_points[0].astype(np.float64)  # one fixed set of image points, seen through each crop
    through = np.array([reference @ m[:, :2].T + m[:, 2] for m in matrices])

    def rms(track):
        return float(np.sqrt((np.diff(track, axis=0) ** 2).sum(-1).mean()))

    return rms(through), rms(np.array(aligned_points)), rms(np.array(image_points))


def test_smoothing_steadies_the_crop_of_a_still_noisy_face(astronaut):
    image, _ = astronaut
    rng = np.random.default_rng(7)
    frames = [np.clip(image + rng.normal(0, 4.0, image.shape), 0, 255).astype(np.uint8) for _ in range(40)]
    raw_crop, raw_points, landmarks = crop_jitter(frames, FaceAligner(128, smoothing=False))
    smooth_crop, smooth_points, _ = crop_jitter(frames, FaceAligner(128))
    assert landmarks > 0.2  # the landmarks do jitter on this input (else the test proves nothing)
    assert smooth_crop < 0.35 * raw_crop
    assert smooth_points <= raw_points


def test_smoothing_does_not_swallow_a_sudden_mouth_movement(astronaut):
    """Only the transform is smoothed: a 2-pixel lip-corner twitch shows in full on its frame."""
    image, points = astronaut
    aligner = FaceAligner(128)
    smoother = aligner.new_smoother()
    for step in range(10):
        still = aligner.align(image, points, smoother, step / 30)
    twitched_points = points.copy()
    twitched_points[48] += (-2.0, -1.0)
    twitched = aligner.align(image, twitched_points, smoother, 10 / 30)
    np.testing.assert_allclose(twitched.matrix, still.matrix, atol=1e-6)  # lips are not anchors
    moved = twitched.points[48] - still.points[48]
    np.testing.assert_allclose(moved, still.matrix[:, :2] @ (-2.0, -1.0), atol=1e-3)
    np.testing.assert_allclose(twitched.points[54], still.points[54], atol=0.02)


def test_smoothing_follows_a_moving_head(astronaut):
    """A head gliding 3 px a frame: the smoothed crop stays within a pixel of the raw one."""
    image, points = astronaut
    aligner = FaceAligner(128)
    smoother = aligner.new_smoother()
    lags = []
    for step in range(30):
        shifted = points + np.float32(3.0 * step)
        raw = aligner.align(image, shifted).matrix
        smooth = aligner.align(image, shifted, smoother, step / 30).matrix
        lags.append(np.abs((shifted @ raw[:, :2].T + raw[:, 2]) - (shifted @ smooth[:, :2].T + smooth[:, 2])).max())
    assert max(lags[10:]) < 1.0
