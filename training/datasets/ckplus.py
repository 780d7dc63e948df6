"""CK+ (Lucey et al., CVPR-W 2010): posed sequences from neutral to the peak of an expression.

Layout: ``cohn-kanade-images/S005/001/S005_001_00000011.png`` (frames of sequence 001 of
subject S005), ``Emotion/S005/001/S005_001_00000011_emotion.txt`` (one number: 0 neutral,
1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness, 7 surprise) and, optionally,
``Landmarks/S005/001/S005_001_00000011_landmarks.txt`` (68 "x y" lines, the iBUG/dlib order).
There is no sheet: the Emotion folder is the annotation. Only the 327 of 593 sequences that
have an emotion file are samples; the labelled frame is the sequence's last one, its peak.

A sample is one sequence (id ``001``, subject ``S005``): onset 1, apex = offset = the peak
frame's number, and ``frames`` holds the peak image only, the one face image the pretraining
uses. CK+ frames are whole 640x490 studio images, not face crops: where the peak's landmarks
exist, ``attributes["face_box"]`` is the square box a dlib face detector would give around them
(``streamer.faces.box_from_points``), as "x0,y0,x1,y1" pixels, and the image loader crops it.
Labels: the paper 002 (Table 2) 3-class grouping under the ``megc3`` class map: anger,
contempt, disgust, fear, sadness -> negative; happiness -> positive; surprise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.errors import InputError
from training.classmaps import MEGC3
from training.samples import Sample

NAME = "ckplus"
DEFAULT_SHEETS: tuple[str, ...] = ()
IMAGE_FOLDER = "cohn-kanade-images"
EMOTION_FOLDER = "Emotion"
LANDMARK_FOLDER = "Landmarks"
EMOTIONS = ("neutral", "anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")  # by file value
MEGC3_GROUPS = {
    "anger": "negative", "contempt": "negative", "disgust": "negative", "fear": "negative", "sadness": "negative",
    "happiness": "positive", "surprise": "surprise",
}
_EMOTION_SUFFIX = "_emotion"


def read(root: Path | None, sheet: Path | None) -> list[Sample]:
    if sheet is not None:
        raise InputError("CK+ has no annotation sheet: give --root, the folder holding Emotion/", path=sheet)
    if root is None or not (root / EMOTION_FOLDER).is_dir():
        raise InputError(f"CK+ folder not found (give the folder holding {EMOTION_FOLDER}/ and {IMAGE_FOLDER}/)",
                         path=root)
    samples = []
    for label_file in sorted((root / EMOTION_FOLDER).glob(f"*/*/*{_EMOTION_SUFFIX}.txt")):
        frame_name = label_file.stem.removesuffix(_EMOTION_SUFFIX)  # S005_001_00000011
        subject, sequence = label_file.parent.parent.name, label_file.parent.name
        parts = frame_name.split("_")
        if len(parts) != 3 or parts[:2] != [subject, sequence] or not parts[2].isdecimal():  # int() reads it
            raise InputError(f"expected {subject}_{sequence}_<frame>{_EMOTION_SUFFIX}.txt", path=label_file)
        peak = int(parts[2])
        emotion = EMOTIONS[_emotion_code(label_file)]
        group = MEGC3_GROUPS.get(emotion)
        image = root / IMAGE_FOLDER / subject / sequence / f"{frame_name}.png"
        landmarks = root / LANDMARK_FOLDER / subject / sequence / f"{frame_name}_landmarks.txt"
        attributes = {"face_box": _face_box(landmarks)} if landmarks.is_file() else {}
        samples.append(Sample(
            dataset=NAME,
            subject=subject,
            sample_id=sequence,
            emotion=emotion,
            onset=1,
            apex=peak,
            offset=peak,
            labels={MEGC3.name: group} if group else {},
            frames=(image,) if image.is_file() else (),
            attributes=attributes,
        ))
    return samples


def _emotion_code(path: Path) -> int:
    """The file's one number ('   3.0000000e+00'), checked to be a whole 0..7."""
    try:
        text = path.read_text(encoding="utf-8").strip()
        value = float(text)
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", path=path) from None
    except ValueError:
        raise InputError(f"expected one emotion number 0..7, found {text[:40]!r}", path=path) from None
    if not value.is_integer() or not 0 <= value < len(EMOTIONS):
        raise InputError(f"emotion {text!r} is not a whole number 0..7", path=path)
    return int(value)


def _face_box(path: Path) -> str:
    """'x0,y0,x1,y1' of the detector-like square box around the file's 68 landmarks."""
    from streamer.faces.boxes import box_from_points

    try:
        points = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InputError(f"landmarks are not numbers: {exc}", path=path) from None
    if points.shape != (68, 2):
        raise InputError(f"expected 68 lines of 'x y', found shape {points.shape}", path=path)
    return ",".join(f"{value:.1f}" for value in box_from_points(points))

