"""dlib's 68-point facial landmarks: finding them on a photo and reading a face's geometry off them.

The synthetic generator anchors every expression on these points, so it needs them only
for the few source photos (see :mod:`training.synthetic.sources`); the landmarks of a
derived identity follow from its known geometric transform. The point numbering is the
iBUG 300-W one used by dlib (0-based): jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
lips 48-67. "Right"/"left" below are the image sides, not the person's.
"""

from __future__ import annotations

import numpy as np

from engines.errors import InputError
from streamer.faces.dlib_backend import dlib_models

RIGHT_EYE = tuple(range(36, 42))  # image-left eye
LEFT_EYE = tuple(range(42, 48))

# Which point a point becomes when the image is mirrored left-right, so that index i keeps
# its anatomical meaning (e.g. 36 stays the outer corner of the image-left eye).
MIRROR_ORDER = (
    *range(16, -1, -1),  # jaw
    *range(26, 16, -1),  # brows
    27, 28, 29, 30,  # nose bridge
    35, 34, 33, 32, 31,  # nostrils
    45, 44, 43, 42, 47, 46,  # image-left eye <- image-right eye
    39, 38, 37, 36, 41, 40,
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,  # outer lips
    64, 63, 62, 61, 60, 67, 66, 65,  # inner lips
)


def detect_landmarks(image_rgb: np.ndarray, *, name: str = "image") -> np.ndarray:
    """68 landmarks (x, y) of the largest frontal face in an RGB ``uint8`` photo, as float64 (68, 2)."""
    detector, shape_model = dlib_models()
    gray = np.ascontiguousarray(image_rgb.mean(axis=2).round().astype(np.uint8))
    faces = detector(gray, 1)
    if not faces:
        raise InputError("dlib found no frontal face", path=name)
    face = max(faces, key=lambda box: box.width() * box.height())
    return shape_model.fit(gray, (face.left(), face.top(), face.right(), face.bottom())).astype(np.float64)


def transform_landmarks(landmarks: np.ndarray, affine: np.ndarray, *, mirrored: bool) -> np.ndarray:
    """Apply a 2x3 affine map; a mirroring map also renumbers the points (:data:`MIRROR_ORDER`)."""
    moved = landmarks @ affine[:, :2].T + affine[:, 2]
    return moved[list(MIRROR_ORDER)] if mirrored else moved


class FaceFrame:
    """A face's own axes in image coordinates, read off its landmarks.

    Expressions are specified in face terms ("up", "away from the midline") and scaled by
    the inter-ocular distance, so one table works for any identity, size, roll or mirror.
    """

    def __init__(self, landmarks: np.ndarray) -> None:
        self.landmarks = landmarks
        self.right_eye = landmarks[list(RIGHT_EYE)].mean(axis=0)
        self.left_eye = landmarks[list(LEFT_EYE)].mean(axis=0)
        self.midpoint = (self.right_eye + self.left_eye) / 2
        eye_axis = self.left_eye - self.right_eye
        self.interocular = float(np.hypot(*eye_axis))
        self.across = eye_axis / self.interocular  # unit vector towards the image-right eye
        up = np.array([self.across[1], -self.across[0]])  # eye axis turned by -90 degrees
        mouth = landmarks[48:68].mean(axis=0)
        self.up = up if np.dot(self.midpoint - mouth, up) > 0 else -up
        self.centre = (self.midpoint + mouth) / 2

    def outward(self, point: np.ndarray) -> np.ndarray:
        """Unit vector along the eye axis pointing away from the facial midline at ``point``."""
        side = np.sign(np.dot(point - self.midpoint, self.across)) or 1.0
        return side * self.across

    def direction(self, point: np.ndarray, outward: float, up: float) -> np.ndarray:
        """Image-space vector for a face-space direction (outward, up) at ``point``."""
        return outward * self.outward(point) + up * self.up
