"""CAS(ME)^3 part A: the ME label sheet (HTNet's edited csv, or the official xlsx).

Columns: Subject ('spNO.1'), Filename (the clip, 'b'), Onset, Apex, Offset, AU,
Objective class, emotion (happy, surprise, sad, disgust, fear, anger, others) and, in
HTNet's ``cas(me)3_part_A_edited.csv``, ``label_for_7`` / ``label_for_3`` (checked
against the ``casme3-7`` / ``casme3-3`` maps: a disagreeing row is an error). One clip
holds several micro-expressions, so the sample id is ``<Filename>_<Onset>`` (the clip
name alone is not unique: 147 clips repeat) and the clip is kept in
``attributes["clip"]``. Frames: ``<root>/spNO.1/b/color/<N>.jpg``, numbered
onset..offset. One row (spNO.149 d) has its apex before the onset; it is kept and
logged. 30 fps.
"""

from __future__ import annotations

from pathlib import Path

from training.classmaps import CLASS_MAPS, labels_for
from training.datasets.frames import frames_between
from training.datasets.records import Record, header_records
from training.samples import Sample

NAME = "casme3"
FPS = 30
DEFAULT_SHEETS = ("cas(me)3_part_A_edited.csv", "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx")
FRAME_COLUMNS = ("Onset", "Apex", "Offset")
LABEL_COLUMNS = {"label_for_7": "casme3-7", "label_for_3": "casme3-3"}


def clip_folder(root: Path, subject: str, clip: str) -> Path:
    return root / subject / clip / "color"


def frame_path(root: Path, sample: Sample, number: int) -> Path:
    """Where frame ``number`` of ``sample`` lives in the CAS(ME)^3 part A layout."""
    return clip_folder(root, sample.subject, sample.attributes["clip"]) / f"{number}.jpg"


def read(root: Path | None, sheet: Path) -> list[Sample]:
    samples = []
    required = ("Subject", "Filename", *FRAME_COLUMNS, "AU", "emotion")
    for record in header_records(sheet, required, optional=("Objective class", *LABEL_COLUMNS)):
        subject = record.required("Subject")
        clip = record.required("Filename")
        onset, apex, offset = record.onset_apex_offset(FRAME_COLUMNS)
        emotion = record.emotion("emotion", NAME)
        labels = labels_for(NAME, emotion)
        _check_label_columns(record, labels)
        attributes = {"clip": clip}
        if record.text("Objective class"):
            attributes["objective_class"] = record.text("Objective class")
        samples.append(Sample(
            dataset=NAME,
            subject=subject,
            sample_id=f"{clip}_{onset}",
            emotion=emotion,
            onset=onset,
            apex=apex,
            offset=offset,
            action_units=record.action_units("AU"),
            labels=labels,
            frames=() if root is None else frames_between(clip_folder(root, subject, clip), ("",), onset, offset),
            attributes=attributes,
        ))
    return samples


def _check_label_columns(record: Record, labels: dict[str, str]) -> None:
    """The sheet's own class ids must be what our maps give for its emotion column."""
    for column, map_name in LABEL_COLUMNS.items():
        if column not in record.cells:
            continue
        written = record.text(column)
        class_name = labels.get(map_name)
        expected = "" if class_name is None else str(CLASS_MAPS[map_name].index(class_name))
        if written != expected:
            raise record.error(f"{map_name} id {written!r} disagrees with emotion {record.text('emotion')!r} (expected {expected!r})", column)
