"""FER-2013 (Goodfellow et al., ICML 2013 challenge): 35,887 48x48 grey faces in one csv.

Sheet: ``fer2013.csv`` with columns emotion (0 angry, 1 disgust, 2 fear, 3 happy, 4 sad,
5 surprise, 6 neutral), pixels (2304 space-separated grey values, row-major) and Usage
(Training / PublicTest / PrivateTest). The faces are already cropped and roughly centred, so
no face detector is needed. The corpus names no people: every sample's subject is
``unknown`` (images of one person may recur), its id is ``row<N>`` with N the csv line.

The images live *inside* the csv, but a Sample points at files. With a root given, the pixels
of every row are decoded once into ``fer2013_images/row<N>.png`` beside the csv (a cache,
rewritten when the csv's size or modification time changes, recorded in ``source.json``), and
``frames`` holds that PNG. Without a root only the sheet is read (``mer data inspect``),
but every row's pixels are still checked. Labels: the paper 002 (Table 2) 3-class grouping
under the ``megc3`` class map (same classes, same order): anger, disgust, fear, sadness ->
negative; happiness -> positive; surprise; neutral dropped.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from engines.errors import InputError
from training.classmaps import MEGC3
from training.datasets.records import Record, header_records
from training.samples import Sample

NAME = "fer2013"
DEFAULT_SHEETS = ("fer2013.csv", "fer2013/fer2013.csv")
SIDE = 48
EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")  # by the csv's id
USAGES = ("Training", "PublicTest", "PrivateTest")
MEGC3_GROUPS = {
    "anger": "negative", "disgust": "negative", "fear": "negative", "sadness": "negative",
    "happiness": "positive", "surprise": "surprise",
}
UNKNOWN_SUBJECT = "unknown"
CACHE_FOLDER = "fer2013_images"


def image_cache(sheet: Path) -> Path:
    """Where the decoded PNGs of ``sheet`` are kept: a folder beside the csv."""
    return sheet.parent / CACHE_FOLDER


def decode_pixels(record: Record) -> np.ndarray:
    """The row's 48x48 uint8 image; a wrong count or a value outside 0..255 names the cell."""
    text = record.required("pixels")
    try:
        values = np.array(text.split(), dtype=np.int64)
    except (ValueError, OverflowError):  # OverflowError: a number beyond 64 bits
        raise record.error("pixels must be space-separated integers", "pixels") from None
    if values.size != SIDE * SIDE:
        raise record.error(f"expected {SIDE * SIDE} pixel values ({SIDE}x{SIDE}), found {values.size}", "pixels")
    if values.min() < 0 or values.max() > 255:
        raise record.error("pixel values must lie in 0..255", "pixels")
    return values.astype(np.uint8).reshape(SIDE, SIDE)


def read(root: Path | None, sheet: Path) -> list[Sample]:
    samples, images = [], []
    for record in header_records(sheet, ("emotion", "pixels", "Usage")):
        emotion_id = record.required("emotion")
        if emotion_id not in {str(index) for index in range(len(EMOTIONS))}:
            raise record.error(f"emotion {emotion_id!r} is not an id 0..{len(EMOTIONS) - 1}", "emotion")
        usage = record.required("Usage")
        if usage not in USAGES:
            raise record.error(f"Usage {usage!r} is not one of {', '.join(USAGES)}", "Usage")
        images.append(decode_pixels(record))
        emotion = EMOTIONS[int(emotion_id)]
        group = MEGC3_GROUPS.get(emotion)
        samples.append(Sample(
            dataset=NAME,
            subject=UNKNOWN_SUBJECT,
            sample_id=f"row{record.row}",
            emotion=emotion,
            labels={MEGC3.name: group} if group else {},
            attributes={"usage": usage},
        ))
    if root is None:
        return samples
    paths = _cached_images(sheet, samples, images)
    return [dataclasses.replace(sample, frames=(path,)) for sample, path in zip(samples, paths)]


def _cached_images(sheet: Path, samples: list[Sample], images: list[np.ndarray]) -> list[Path]:
    """Decode every row into the cache once; reuse it while the csv is unchanged."""
    import cv2

    cache = image_cache(sheet)
    paths = [cache / f"{sample.sample_id}.png" for sample in samples]
    stat = sheet.stat()
    source = {"csv": sheet.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "images": len(paths)}
    record = cache / "source.json"
    if record.is_file() and _read_json(record) == source and all(path.is_file() for path in paths):
        return paths
    try:
        cache.mkdir(exist_ok=True)
        for path, image in zip(paths, images):
            if not cv2.imwrite(str(path), image):
                raise OSError("cv2.imwrite failed")
        record.write_text(json.dumps(source))
    except OSError as exc:
        raise InputError(f"cannot write the decoded FER-2013 images beside the csv ({exc}); copy the csv "
                         "to a writable folder", path=cache) from None
    return paths


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
