"""RAF-DB basic (Li, Deng, Du, CVPR 2017): 15,339 in-the-wild faces with one of 7 basic emotions.

Layout of the ``basic`` release: ``EmoLabel/list_patition_label.txt`` (sic), one line per image,
``train_00001.jpg 5`` (1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger,
7 neutral), and ``Image/aligned/train_00001_aligned.jpg``, the 100x100 face the release aligned
with its own landmarks. ``root`` is the ``basic`` folder or the folder holding it. The aligned
faces need no detector; ``frames`` holds the aligned image when it exists (the ``original``
images are whole photos and are not used). No identities are published: every subject is
``unknown``; the sample id is the image stem and ``attributes["split"]`` the release's
train/test split. Labels: the paper 002 (Table 2) 3-class grouping under the ``megc3`` class map:
fear, disgust, sadness, anger -> negative; happiness -> positive; surprise; neutral dropped.
"""

from __future__ import annotations

from pathlib import Path

from engines.errors import InputError
from training.classmaps import MEGC3
from training.samples import Sample

NAME = "rafdb"
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
DEFAULT_SHEETS = (str(LABEL_FILE), str(Path("basic") / LABEL_FILE))
EMOTIONS = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"}
SPLITS = ("train", "test")
MEGC3_GROUPS = {
    "fear": "negative", "disgust": "negative", "sadness": "negative", "anger": "negative",
    "happiness": "positive", "surprise": "surprise",
}
UNKNOWN_SUBJECT = "unknown"


def aligned_image_path(basic: Path, image_name: str) -> Path:
    """``train_00001.jpg`` -> ``<basic>/Image/aligned/train_00001_aligned.jpg``."""
    return basic / "Image" / "aligned" / f"{Path(image_name).stem}_aligned.jpg"


def read(root: Path | None, sheet: Path) -> list[Sample]:
    if not sheet.is_file():
        raise InputError("label list not found", path=sheet)
    basic = sheet.parent.parent  # the label list lives in <basic>/EmoLabel/
    try:
        text = sheet.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", path=sheet) from None
    samples = []
    for row, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise InputError(f"expected '<image> <label>', found {len(fields)} fields", path=sheet, row=row)
        image_name, label = fields
        split = image_name.split("_", 1)[0]
        if split not in SPLITS or not image_name.lower().endswith(".jpg"):
            raise InputError(f"image name {image_name!r} is not train_*.jpg or test_*.jpg", path=sheet, row=row,
                             column="image")
        if label not in {str(number) for number in EMOTIONS}:
            raise InputError(f"label {label!r} is not 1..7", path=sheet, row=row, column="label")
        emotion = EMOTIONS[int(label)]
        group = MEGC3_GROUPS.get(emotion)
        frames: tuple[Path, ...] = ()
        if root is not None:
            aligned = aligned_image_path(basic, image_name)
            frames = (aligned,) if aligned.is_file() else ()
        samples.append(Sample(
            dataset=NAME,
            subject=UNKNOWN_SUBJECT,
            sample_id=Path(image_name).stem,
            emotion=emotion,
            labels={MEGC3.name: group} if group else {},
            frames=frames,
            attributes={"split": split},
        ))
    return samples
