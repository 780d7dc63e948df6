"""Action units as displacement fields, and the emotion classes as combinations of them.

Each action unit (FACS) moves a few landmark groups in a characteristic direction. Here
an AU is a list of anchors: a landmark (or the mean of several, for points such as the
cheek that dlib does not mark), a direction in face terms (``outward`` = away from the
facial midline along the eye axis, ``up`` = towards the brows), and a weight; plus one
radius, in inter-ocular distances, for the bumps. :func:`au_anchors` turns that into
image-space anchors for one face, so mirrored or rotated subjects move correctly.

Directions follow the FACS manual's descriptions in the frontal view; out-of-plane parts
(lips pushed forward, skin bulging) cannot be rendered by a 2-D warp and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synthetic.fields import Anchor, Region, anchored_field, unit_peak
from training.synthetic.landmarks import FaceFrame


@dataclass(frozen=True)
class AnchorSpec:
    points: tuple[int, ...]  # landmark indices; the anchor sits at their mean
    outward: float
    up: float
    weight: float = 1.0


@dataclass(frozen=True)
class ActionUnit:
    code: str  # "AU12"
    name: str
    radius_iod: float
    anchors: tuple[AnchorSpec, ...]


def _pair(right: tuple[int, ...], left: tuple[int, ...], outward: float, up: float, weight: float = 1.0):
    """The same movement on both halves of the face (every AU here is bilateral)."""
    return (AnchorSpec(right, outward, up, weight), AnchorSpec(left, outward, up, weight))


_UP = (0.0, 1.0)
_DOWN = (0.0, -1.0)

ACTION_UNITS: dict[str, ActionUnit] = {
    au.code: au
    for au in (
        ActionUnit("AU1", "inner brow raiser", 0.6, (
            *_pair((21,), (22,), 0.0, 1.0), *_pair((20,), (23,), 0.0, 0.7))),
        ActionUnit("AU2", "outer brow raiser", 0.6, (
            *_pair((17,), (26,), 0.15, 1.0, 0.8), *_pair((18,), (25,), 0.1, 1.0))),
        ActionUnit("AU4", "brow lowerer", 0.6, (
            *_pair((21,), (22,), -0.6, -0.8), *_pair((19, 20), (23, 24), -0.3, -1.0, 0.8))),
        ActionUnit("AU5", "upper lid raiser", 0.4, (
            *_pair((37,), (44,), 0.0, 1.0), *_pair((38,), (43,), 0.0, 1.0))),
        ActionUnit("AU6", "cheek raiser", 0.7, (
            *_pair((1, 31, 41), (15, 35, 46), 0.2, 1.0), *_pair((40, 41), (46, 47), 0.0, 1.0, 0.5),
            *_pair((36,), (45,), 0.0, 0.6, 0.4))),
        ActionUnit("AU7", "lid tightener", 0.36, (
            *_pair((40, 41), (46, 47), 0.0, 1.0), *_pair((37, 38), (43, 44), 0.0, -0.5, 0.6))),
        ActionUnit("AU9", "nose wrinkler", 0.5, (
            *_pair((31,), (35,), 0.0, 1.0), AnchorSpec((33,), 0.0, 0.7), AnchorSpec((28,), 0.0, -0.4, 0.5),
            *_pair((21,), (22,), 0.0, -0.5, 0.4))),
        ActionUnit("AU10", "upper lip raiser", 0.5, (
            *_pair((50,), (52,), 0.0, 1.0), AnchorSpec((51, 62), 0.0, 0.8), *_pair((49,), (53,), 0.1, 0.8, 0.7))),
        ActionUnit("AU12", "lip corner puller", 0.6, _pair((48, 60), (54, 64), 0.75, 0.65)),
        ActionUnit("AU14", "dimpler", 0.7, _pair((48, 60), (54, 64), 1.0, 0.0)),
        ActionUnit("AU15", "lip corner depressor", 0.56, _pair((48, 60), (54, 64), 0.2, -1.0)),
        ActionUnit("AU17", "chin raiser", 0.7, (
            AnchorSpec((8,), 0.0, 1.0), *_pair((7,), (9,), 0.0, 0.8, 0.8), AnchorSpec((57, 66), 0.0, 0.9, 0.8))),
        ActionUnit("AU25", "lips part", 0.44, (
            AnchorSpec((57, 66), 0.0, -1.0), *_pair((58,), (56,), 0.0, -0.8, 0.8), AnchorSpec((62,), 0.0, 0.3, 0.4))),
        ActionUnit("AU26", "jaw drop", 0.9, (
            AnchorSpec((8,), 0.0, -1.0), *_pair((6,), (10,), 0.0, -0.8, 0.8), AnchorSpec((57,), 0.0, -1.0, 0.8))),
    )
}

# Emotion words as CASME II writes them, with the AU combinations drawn for each; the MEGC
# three-class grouping (training.classmaps.MEGC3) maps them to positive / surprise / negative.
EMOTION_AUS: dict[str, tuple[tuple[str, ...], ...]] = {
    "happiness": (("AU6", "AU12"), ("AU12",), ("AU6", "AU12", "AU25")),
    "surprise": (("AU1", "AU2"), ("AU1", "AU2", "AU5"), ("AU1", "AU2", "AU5", "AU26"), ("AU1", "AU2", "AU25")),
    "disgust": (("AU9",), ("AU9", "AU10"), ("AU4", "AU7"), ("AU4", "AU9")),
    "repression": (("AU14",), ("AU15", "AU17"), ("AU17",), ("AU14", "AU17")),
}
# The basic emotions that the synthetic still faces show (``mer synth faces``, RAF-DB's layout),
# as RAF-DB names them. RAF-DB has no "repression", so its negative class is disgust and sadness
# here; sadness takes the EMFACS prototype (AU1 + AU4 + AU15) and two variants with AU17, which
# overlap CASME II's repression (AU15 / AU17) as the real emotions do.
STILL_EMOTION_AUS: dict[str, tuple[tuple[str, ...], ...]] = {
    "happiness": EMOTION_AUS["happiness"],
    "surprise": EMOTION_AUS["surprise"],
    "disgust": EMOTION_AUS["disgust"],
    "sadness": (("AU1", "AU4", "AU15"), ("AU15", "AU17"), ("AU1", "AU4", "AU15", "AU17")),
}
EMOTION_CLASSES: dict[str, tuple[str, ...]] = {
    "positive": ("happiness",),
    "surprise": ("surprise",),
    "negative": ("disgust", "repression"),
}


def au_anchors(code: str, face: FaceFrame) -> list[Anchor]:
    """Image-space anchors of one AU on one face."""
    try:
        unit = ACTION_UNITS[code]
    except KeyError:
        raise KeyError(f"unknown action unit {code!r} (known: {', '.join(ACTION_UNITS)})") from None
    anchors = []
    for spec in unit.anchors:
        centre = face.landmarks[list(spec.points)].mean(axis=0)
        direction = face.direction(centre, spec.outward, spec.up)
        anchors.append(Anchor(
            centre=(float(centre[0]), float(centre[1])),
            direction=(float(direction[0]), float(direction[1])),
            radius=unit.radius_iod * face.interocular,
            weight=spec.weight,
        ))
    return anchors


def expression_field(codes: tuple[str, ...], face: FaceFrame, region: Region) -> np.ndarray:
    """Unit-peak field of several AUs together.

    Each AU is first normalised to unit peak so that all of them take part visibly, then the
    sum is normalised again so the event's amplitude is its peak displacement.
    """
    total = np.zeros((*region.shape, 2), dtype=np.float32)
    for code in codes:
        total += anchored_field(au_anchors(code, face), region)
    return unit_peak(total)


def face_region(face: FaceFrame, size: tuple[int, int], extra: list[Anchor] = ()) -> Region:
    """One rectangle holding every AU's bumps (and ``extra`` ones, e.g. blinks) for this face."""
    anchors = [anchor for code in ACTION_UNITS for anchor in au_anchors(code, face)] + list(extra)
    return Region.around(anchors, size)
