"""Find a clip's frame files on disk (and write them, for fixtures and synthetic data).

Each dataset names frames ``<prefix><number>.<ext>`` inside one folder per clip
(CASME II ``img46.jpg`` / ``reg_img46.jpg``, SAMM ``006_05562.jpg``, SMIC
``image106720.bmp``); the number is the frame number the annotation sheets use. A
reader passes the clip folder and the prefixes its dataset uses; frames come back
sorted by that number. Annotation sheets are usable without any frames: a missing
folder simply yields no frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from engines.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def numbered_frames(folder: Path, prefixes: Sequence[str]) -> dict[int, Path]:
    """Frame number -> file for the first prefix in ``prefixes`` that has files in ``folder``.

    Prefixes are tried in order so a folder holding both raw and cropped frames yields
    one consistent set.
    """
    if not folder.is_dir():
        return {}
    files = [path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES]
    for prefix in prefixes:
        numbered = {}
        for path in files:
            digits = path.stem[len(prefix):]
            if path.stem.startswith(prefix) and digits.isdecimal():  # isdigit() also takes '²', which int() refuses
                numbered[int(digits)] = path
        if numbered:
            return dict(sorted(numbered.items()))
    return {}


def frames_between(folder: Path, prefixes: Sequence[str], onset: int | None, offset: int | None) -> tuple[Path, ...]:
    """The clip's frames numbered onset..offset inclusive (all frames when either is None)."""
    numbered = numbered_frames(folder, prefixes)
    return tuple(
        path
        for number, path in numbered.items()
        if (onset is None or number >= onset) and (offset is None or number <= offset)
    )


def write_frames(frame_path: Callable[[int], Path], numbered_images: Iterable[tuple[int, np.ndarray]]) -> tuple[Path, ...]:
    """Write images where a dataset's layout puts them; ``frame_path(number)`` is that layout."""
    import cv2

    written = []
    for number, image in numbered_images:
        path = frame_path(number)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), image):
            raise InputError("could not write image", path=path)
        written.append(path)
    return tuple(written)
