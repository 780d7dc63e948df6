"""CASME II: the official coding sheet plus, optionally, the frame folders.

Sheet: ``CASME2-coding-20190701.xlsx`` (or its csv export). Columns: Subject ('01'),
Filename ('EP02_01f'), a blank column, OnsetFrame, ApexFrame, OffsetFrame, a blank
column, Action Units ('4+7+L10'), Estimated Emotion, and in the xlsx Objective
Classes. Quirks: a few ApexFrame cells hold '/' (apex not annotated) -> ``apex=None``;
one sample has apex == offset. Frames: ``<root>/sub01/EP02_01f/img46.jpg`` (raw) or
``reg_img46.jpg`` (official Cropped set); a sample's frames are those numbered
onset..offset. 200 fps.
"""

from __future__ import annotations

from pathlib import Path

from training.classmaps import labels_for
from training.datasets.frames import frames_between
from training.datasets.records import header_records
from training.samples import Sample

NAME = "casme2"
FPS = 200
DEFAULT_SHEETS = ("CASME2-coding-20190701.xlsx", "CASME2-coding-20190701.csv")
FRAME_PREFIXES = ("reg_img", "img")
MISSING_APEX = ("/",)
FRAME_COLUMNS = ("OnsetFrame", "ApexFrame", "OffsetFrame")


def subject_id(cell_text: str) -> str:
    """'01', '1' or 'sub01' -> 'sub01': the folder name, and the composite's subject id."""
    number = cell_text[3:] if cell_text.lower().startswith("sub") else cell_text
    return f"sub{number.zfill(2)}"


def clip_folder(root: Path, subject: str, sample_id: str) -> Path:
    return root / subject / sample_id


def frame_path(root: Path, sample: Sample, number: int, prefix: str = "img") -> Path:
    """Where frame ``number`` of ``sample`` lives in the CASME II layout."""
    return clip_folder(root, sample.subject, sample.sample_id) / f"{prefix}{number}.jpg"


def read(root: Path | None, sheet: Path) -> list[Sample]:
    samples = []
    required = ("Subject", "Filename", *FRAME_COLUMNS, "Action Units", "Estimated Emotion")
    for record in header_records(sheet, required, optional=("Objective Classes",)):
        subject = subject_id(record.required("Subject"))
        sample_id = record.required("Filename")
        onset, apex, offset = record.onset_apex_offset(FRAME_COLUMNS, missing_apex=MISSING_APEX)
        emotion = record.emotion("Estimated Emotion", NAME)
        objective = record.text("Objective Classes")
        samples.append(Sample(
            dataset=NAME,
            subject=subject,
            sample_id=sample_id,
            emotion=emotion,
            onset=onset,
            apex=apex,
            offset=offset,
            action_units=record.action_units("Action Units"),
            labels=labels_for(NAME, emotion),
            frames=() if root is None else frames_between(clip_folder(root, subject, sample_id), FRAME_PREFIXES, onset, offset),
            attributes={"objective_class": objective} if objective else {},
        ))
    return samples
