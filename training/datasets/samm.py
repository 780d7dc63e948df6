"""SAMM (micro-expressions): ``SAMM_Micro_FACS_Codes_v2.xlsx`` plus, optionally, the frames.

Sheet: worksheet MICRO_ONLY; a citation preamble of variable length sits above the
header, which is therefore found by content. Columns: Subject ('006', written 6 in
the csv export), Filename ('006_1_2'), Inducement Code, Onset Frame, Apex Frame,
Offset Frame, Duration (an Excel formula; ignored), Micro, Action Units, Estimated
Emotion (capitalised, 'Other' for other), Objective Classes, Notes. Frames:
``<root>/006/006_1_2/006_05562.jpg``; a sample's frames are those numbered
onset..offset. 200 fps. Two apex cells of the v2 xlsx lie outside onset..offset and are
corrected by :mod:`training.datasets.fixes`.
"""

from __future__ import annotations

from pathlib import Path

from training.classmaps import labels_for
from training.datasets.fixes import apply_fixes
from training.datasets.frames import frames_between
from training.datasets.records import header_records
from training.samples import Sample

NAME = "samm"
FPS = 200
DEFAULT_SHEETS = ("SAMM_Micro_FACS_Codes_v2.xlsx", "SAMM_Micro_FACS_Codes_v2.csv")
WORKSHEET = "MICRO_ONLY"
FRAME_COLUMNS = ("Onset Frame", "Apex Frame", "Offset Frame")
# Optional sheet columns kept in Sample.attributes, under these keys.
ATTRIBUTE_COLUMNS = {"Inducement Code": "inducement_code", "Objective Classes": "objective_class", "Notes": "notes"}


def subject_id(text: str) -> str:
    """SAMM subjects are three digits ('6' in the csv export -> '006')."""
    return text.zfill(3)


def clip_folder(root: Path, subject: str, sample_id: str) -> Path:
    return root / subject / sample_id


def frame_path(root: Path, sample: Sample, number: int) -> Path:
    """Where frame ``number`` of ``sample`` lives in the SAMM layout (5-digit numbers)."""
    return clip_folder(root, sample.subject, sample.sample_id) / f"{sample.subject}_{number:05d}.jpg"


def read(root: Path | None, sheet: Path) -> list[Sample]:
    samples = []
    required = ("Subject", "Filename", *FRAME_COLUMNS, "Action Units", "Estimated Emotion")
    worksheet = WORKSHEET if sheet.suffix.lower() != ".csv" else None
    for record in header_records(sheet, required, optional=tuple(ATTRIBUTE_COLUMNS), sheet_name=worksheet):
        subject = subject_id(record.required("Subject"))
        sample_id = record.required("Filename")
        onset = record.required_frame("Onset Frame")
        apex = apply_fixes(NAME, subject, sample_id, "apex", record.required_frame("Apex Frame"), record, "Apex Frame")
        offset = record.required_frame("Offset Frame")
        record.check_order(onset, apex, offset, FRAME_COLUMNS)
        emotion = record.emotion("Estimated Emotion", NAME)
        folder = None if root is None else clip_folder(root, subject, sample_id)
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
            frames=() if folder is None else frames_between(folder, (f"{subject}_",), onset, offset),
            attributes={key: record.text(column) for column, key in ATTRIBUTE_COLUMNS.items() if record.text(column)},
        ))
    return samples
