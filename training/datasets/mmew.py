"""MMEW (micro-expressions): ``MMEW_Final.xlsx`` plus, optionally, the frame folders.

Sheet columns (as the official workbook, cf. MEB's MMEW loader): Subject, Filename,
OnsetFrame, ApexFrame, OffsetFrame, remarks, Action Units (also accepted as ``AU``),
Estimated Emotion (happiness, surprise, disgust, fear, sadness, anger, others).
Frames: ``<root>/Micro_Expression/<emotion>/<Filename>/<N>.jpg`` (``root`` may also be
the ``Micro_Expression`` folder); a sample's frames are those numbered onset..offset.
Class maps: ``mmew-4`` (MMNet) and ``megc3``. 90 fps.
"""

from __future__ import annotations

from pathlib import Path

from training.classmaps import labels_for
from training.datasets.frames import frames_between
from training.datasets.records import header_records
from training.samples import Sample

NAME = "mmew"
FPS = 90
DEFAULT_SHEETS = ("MMEW_Final.xlsx", "MMEW_Final.csv")
FRAME_COLUMNS = ("OnsetFrame", "ApexFrame", "OffsetFrame")
AU_COLUMN = ("Action Units", "AU")


def micro_root(root: Path) -> Path:
    return root / "Micro_Expression" if (root / "Micro_Expression").is_dir() else root


def frame_path(root: Path, sample: Sample, number: int) -> Path:
    """Where frame ``number`` of ``sample`` lives in the MMEW layout."""
    return micro_root(root) / sample.emotion / sample.sample_id / f"{number}.jpg"


def read(root: Path | None, sheet: Path) -> list[Sample]:
    samples = []
    required = ("Subject", "Filename", *FRAME_COLUMNS, AU_COLUMN, "Estimated Emotion")
    for record in header_records(sheet, required, optional=("remarks",)):
        subject = record.required("Subject")
        sample_id = record.required("Filename")
        onset, apex, offset = record.onset_apex_offset(FRAME_COLUMNS)
        emotion = record.emotion("Estimated Emotion", NAME)
        folder = None if root is None else micro_root(root) / emotion / sample_id
        samples.append(Sample(
            dataset=NAME,
            subject=subject,
            sample_id=sample_id,
            emotion=emotion,
            onset=onset,
            apex=apex,
            offset=offset,
            action_units=record.action_units(AU_COLUMN[0]),
            labels=labels_for(NAME, emotion),
            frames=() if folder is None else frames_between(folder, ("",), onset, offset),
            attributes={"remarks": record.text("remarks")} if record.text("remarks") else {},
        ))
    return samples
