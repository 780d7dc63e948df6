"""SMIC-HS: no annotation sheet; the folder layout is the annotation.

Layout: ``<root>/HS/s1/micro/negative/s1_ne_01/image106720.bmp`` (``root`` may also be
the ``HS`` folder itself); emotion folders are negative / positive / surprise, frames
``image<6 digits>`` or ``reg_image<6 digits>`` (.bmp or .jpg). Each clip folder is one
micro-expression, so a sample's frames are *all* frames of its folder; onset and
offset are the first and last frame numbers. SMIC has no apex annotation: the apex is
the middle frame of the sorted clip, ``frames[(n - 1) // 2]`` — the convention of
EDMDBN and MEB ("SMIC has no apex annotation, so the middle frame is used"), equal to
onset + (offset - onset) // 2 for a gap-free clip. Subjects are written zero-padded
(``s1`` -> ``s01``) as in the MEGC2019 composite and the STSTNet checkpoints; the
sample id is the clip folder's own name (``s1_ne_01``). 100 fps.
"""

from __future__ import annotations

from pathlib import Path

from engines.errors import InputError
from training.classmaps import labels_for
from training.datasets.frames import numbered_frames
from training.samples import Sample

NAME = "smic"
FPS = 100
DEFAULT_SHEETS: tuple[str, ...] = ()
FRAME_PREFIXES = ("reg_image", "image")
EMOTION_FOLDERS = ("negative", "positive", "surprise")


def subject_id(folder_name: str) -> str:
    """'s1' -> 's01'."""
    return f"s{folder_name[1:].zfill(2)}"


def subject_folder(subject: str) -> str:
    """'s01' -> 's1', the folder name SMIC uses."""
    return f"s{int(subject[1:])}"


def hs_root(root: Path) -> Path:
    """``root`` is the folder holding ``HS/``, or ``HS`` itself."""
    return root if root.name == "HS" else root / "HS"


def frame_path(root: Path, sample: Sample, number: int, suffix: str = ".bmp") -> Path:
    """Where frame ``number`` of ``sample`` lives in the SMIC-HS layout."""
    folder = hs_root(root) / subject_folder(sample.subject) / "micro" / sample.emotion / sample.sample_id
    return folder / f"image{number:06d}{suffix}"


def read(root: Path | None, sheet: Path | None) -> list[Sample]:
    if sheet is not None:
        raise InputError("SMIC has no annotation sheet: give --root, the folder holding HS/", path=sheet)
    if root is None or not hs_root(root).is_dir():
        raise InputError("SMIC-HS folder not found (give the folder holding HS/)", path=root)
    base = hs_root(root)
    subject_folders = sorted(
        (path for path in base.iterdir() if path.is_dir() and path.name[:1] == "s" and path.name[1:].isdecimal()),
        key=lambda path: int(path.name[1:]),
    )
    if not subject_folders:
        raise InputError("no subject folders s1, s2, ... (expected HS/s1/micro/negative/s1_ne_01/)", path=base)
    samples = []
    for subject_dir in subject_folders:
        for emotion in EMOTION_FOLDERS:
            emotion_dir = subject_dir / "micro" / emotion
            if not emotion_dir.is_dir():
                continue
            for clip_dir in sorted(path for path in emotion_dir.iterdir() if path.is_dir()):
                samples.append(_clip_sample(subject_id(subject_dir.name), emotion, clip_dir))
    return samples


def _clip_sample(subject: str, emotion: str, clip_dir: Path) -> Sample:
    numbered = numbered_frames(clip_dir, FRAME_PREFIXES)
    if not numbered:
        raise InputError("clip folder holds no image<number> frames", path=clip_dir)
    numbers = list(numbered)
    return Sample(
        dataset=NAME,
        subject=subject,
        sample_id=clip_dir.name,
        emotion=emotion,
        onset=numbers[0],
        apex=numbers[(len(numbers) - 1) // 2],
        offset=numbers[-1],
        labels=labels_for(NAME, emotion),
        frames=tuple(numbered.values()),
    )
