"""MediaPipe Tasks FaceLandmarker: 478 mesh points, reported in dlib's 68-point scheme.

The model bundle (``face_landmarker.task``) is Google's and is not installed with any package;
see :func:`streamer.faces.model_files.face_landmarker_path`. MediaPipe runs its own face
detector inside the landmarker, so ``refine`` simply runs the landmarker on a crop around the
known box: smaller input, and the face found there is the tracked one. It costs about 10 ms a
face on this machine's CPU, against about 1 ms for dlib's shape predictor.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from engines.errors import InputError
from streamer.faces.boxes import box_from_points, grow_box
from streamer.faces.model_files import face_landmarker_path
from streamer.faces.mp_to_68 import mesh_to_68
from streamer.faces.types import BoxF, FaceLandmarks, require_image

log = logging.getLogger(__name__)

# How much larger than the face box the crop given to ``refine``'s landmarker is: MediaPipe's
# detector needs some context around the face, and the face may have moved since last frame.
REFINE_CONTEXT = 1.8


class MediaPipeBackend:
    """:class:`~streamer.faces.types.LandmarkBackend` on MediaPipe's FaceLandmarker.

    The landmarker reports no score per face (faces under ``min_presence`` are dropped by
    MediaPipe itself), so ``confidence`` is 1 for every face it returns. Call :meth:`close`
    (or use ``with``) to free the native graph: closing it at interpreter exit prints errors.
    """

    name = "mediapipe"
    accepts_gray = False  # its models take colour

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        max_faces: int = 4,
        min_detection: float = 0.5,
        min_presence: float = 0.5,
    ) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        path = Path(model_path) if model_path is not None else face_landmarker_path()

        def landmarker(num_faces: int):
            options = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(path)),
                num_faces=num_faces,
                min_face_detection_confidence=min_detection,
                min_face_presence_confidence=min_presence,
            )
            return vision.FaceLandmarker.create_from_options(options)

        log.debug("loading MediaPipe FaceLandmarker from %s", path)
        try:
            self._whole = landmarker(max_faces)
        except (RuntimeError, ValueError) as exc:  # MediaPipe's own words, e.g. "Unable to open zip archive."
            raise InputError(f"MediaPipe could not load its face landmarker model ({exc}); replace the file with "
                             "scripts/fetch_face_landmarker.sh (docs/faces.md)", path=path) from None
        self._single = landmarker(1)

    def detect(self, image_bgr: np.ndarray) -> list[FaceLandmarks]:
        require_image(image_bgr, gray=False)
        return [self._face(mesh) for mesh in self._run(self._whole, image_bgr)]

    def refine(self, image_bgr: np.ndarray, box: BoxF) -> FaceLandmarks | None:
        height, width = image_bgr.shape[:2]
        x0, y0, x1, y1 = grow_box(box, REFINE_CONTEXT)
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        x1, y1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None  # the box has (almost) left the picture
        meshes = self._run(self._single, image_bgr[y0:y1, x0:x1])
        if not meshes:
            return None
        return self._face(meshes[0] + np.array([x0, y0], dtype=np.float32))

    def close(self) -> None:
        self._whole.close()
        self._single.close()

    def __enter__(self) -> MediaPipeBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _run(landmarker, image_bgr: np.ndarray) -> list[np.ndarray]:
        """(478, 2) float32 mesh points in pixels of ``image_bgr``, one array per face."""
        import mediapipe as mp

        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        size = np.array([image_bgr.shape[1], image_bgr.shape[0]], dtype=np.float32)
        return [np.array([(p.x, p.y) for p in face], dtype=np.float32) * size for face in result.face_landmarks]

    @staticmethod
    def _face(mesh: np.ndarray) -> FaceLandmarks:
        points = mesh_to_68(mesh)
        return FaceLandmarks(points, box_from_points(points), 1.0)
