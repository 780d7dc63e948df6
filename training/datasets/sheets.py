"""Write annotation sheets in the real datasets' exact schemas.

The licensed sheets cannot be committed, so tests and the synthetic generator write their
own sheets with these functions and read them back with the real readers. Each writer
reproduces the quirks of the official file (preamble rows, blank columns, ``'/'`` or
``-1`` for a missing apex, no header row ...) so a reader that passes on a written
sheet also passes on the real one. The format follows the file suffix (``.xlsx`` or
``.csv``) where the official sheet exists in both forms.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from training.classmaps import CLASS_MAPS
from training.datasets import reader_module
from training.datasets.frames import write_frames
from training.datasets.tables import write_rows
from training.samples import Interval, Sample

CASME2_COLUMNS = (
    "Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
    "Action Units", "Estimated Emotion",
)
SAMM_COLUMNS = (
    "Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
    "Duration", "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes",
)
SAMM_LV_COLUMNS = (
    "Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
    "Action Units", "Notes",
)
MMEW_COLUMNS = (
    "Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "remarks", "Action Units",
    "Estimated Emotion",
)
CASME3_COLUMNS = (
    "Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion",
    "label_for_7", "label_for_3", "imagename_apex", "imagename_onset", "imagename_apex_offset",
)
COMPOSITE_COLUMNS = ("dataset", "sub", "filename_o", "label", "apex", "imagename", "sub_filename")

# The text above the header of the official SAMM sheets (citation notes and symbol key):
# written so that readers are tested against a header that is not on the first row.
SAMM_PREAMBLE = (
    ("SAMM Dataset - Master FACS Codes",),
    (),
    ("Symbol Key:",),
    ('"/" = or',),
    ('"?" = some AU\'s continue for a while and have unclear offset',),
    (),
    ("AU Help:",),
    ('"L2 or R2" = Unilateral AU 2 on left side of face / right side of face',),
    ('"A2" = Asymmetric AU 2. Occurs on both sides of face but stronger on one side',),
    (),
)
SAMM_LV_PREAMBLE = (
    ("SAMM Long Videos Dataset - FACS Codes",),
    (),
    ("Symbol Key:",),
    ('"/" = or',),
    (),
    ("AU Help:",),
    ('"L2 or R2" = Unilateral AU 2 on left side of face / right side of face', None, None, None, None,
     "NOTE: Subjects with Apex Frame not annotated were labelled as -1."),
    ('"A2" = Asymmetric AU 2. Occurs on both sides of face but stronger on one side',),
    (),
)

SAMM_MICRO_TYPE = "Micro - 1/2"
SAMM_MACRO_TYPE = "Macro"
CASME2_MISSING_APEX = "/"
SAMM_LV_MISSING = -1
CASME2SPOT_MISSING = 0


def write_casme2_coding_sheet(path: str | Path, samples: Iterable[Sample]) -> None:
    """The CASME II coding sheet (CASME2-coding-20190701): two blank columns, '/' for no apex.

    ``Objective Classes`` is added when any sample carries ``attributes["objective_class"]``.
    """
    samples = list(samples)
    with_objective = any("objective_class" in sample.attributes for sample in samples)
    header = CASME2_COLUMNS + (("Objective Classes",) if with_objective else ())
    rows: list[Sequence[object]] = [header]
    for sample in samples:
        row = [
            _strip_prefix(sample.subject, "sub").zfill(2),
            sample.sample_id,
            None,
            sample.onset,
            CASME2_MISSING_APEX if sample.apex is None else sample.apex,
            sample.offset,
            None,
            _join_aus(sample.action_units),
            sample.emotion,
        ]
        if with_objective:
            row.append(sample.attributes.get("objective_class"))
        rows.append(row)
    write_rows(path, rows)


def write_samm_sheet(path: str | Path, samples: Iterable[Sample]) -> None:
    """SAMM_Micro_FACS_Codes_v2 (sheet MICRO_ONLY): preamble, then one row per micro-expression.

    The emotion is written capitalised as in the official sheet; inducement code, objective
    class and notes come from ``attributes`` when present.
    """
    rows: list[Sequence[object]] = [*SAMM_PREAMBLE, SAMM_COLUMNS]
    for sample in samples:
        rows.append([
            sample.subject,
            sample.sample_id,
            sample.attributes.get("inducement_code", _samm_inducement(sample.sample_id)),
            sample.onset,
            sample.apex,
            sample.offset,
            _duration(sample.onset, sample.offset),
            SAMM_MICRO_TYPE,
            _join_aus(sample.action_units),
            sample.emotion.capitalize(),
            sample.attributes.get("objective_class"),
            sample.attributes.get("notes"),
        ])
    write_rows(path, rows, sheet_name="MICRO_ONLY")


def write_samm_lv_sheet(path: str | Path, intervals: Iterable[Interval]) -> None:
    """SAMM Long Videos V2: preamble rows, header, ``Type`` 'Micro - 1/2' or 'Macro', -1 for no apex.

    ``Filename`` is the expression id (``006_1_2``); the long video it belongs to
    (``006_1``) is that name without its last part, so ``Interval.video`` is not written.
    """
    rows: list[Sequence[object]] = [*SAMM_LV_PREAMBLE, SAMM_LV_COLUMNS]
    for interval in intervals:
        name = interval.expression_id or interval.video
        rows.append([
            interval.subject,
            name,
            _samm_inducement(name),
            interval.onset,
            SAMM_LV_MISSING if interval.apex is None else interval.apex,
            SAMM_LV_MISSING if interval.offset is None else interval.offset,
            _duration(interval.onset, interval.offset),
            SAMM_MICRO_TYPE if interval.kind == "micro" else SAMM_MACRO_TYPE,
            _join_aus(interval.action_units),
            None,
        ])
    write_rows(path, rows)


def write_casme2spot_sheet(path: str | Path, intervals: Iterable[Interval]) -> None:
    """CAS(ME)^2 code_final(Updated).csv as published in MEGC2024-CODE: no header, 11 columns.

    Columns: participant, expression id, onset, apex, offset (0 = none, for apex too), AUs
    ('NULL' when none), emotion class, 'macro-expression'/'micro-expression', self-reported emotion, offset - onset,
    video path ``s15/15_0401girlcrashing``. The participant column is written as the
    subject's number (the official sheet numbers participants 1..22 in its own order;
    readers take the subject from the video path, which is unambiguous).
    """
    rows: list[Sequence[object]] = []
    for interval in intervals:
        offset = CASME2SPOT_MISSING if interval.offset is None else interval.offset
        rows.append([
            _strip_prefix(interval.subject, "s").lstrip("0") or "0",
            interval.expression_id,
            interval.onset,
            CASME2SPOT_MISSING if interval.apex is None else interval.apex,
            offset,
            _join_aus(interval.action_units) or "NULL",
            interval.emotion,
            f"{interval.kind}-expression",
            interval.emotion,
            offset - interval.onset,  # the sheet's duration column: negative when offset is 0
            f"{interval.subject}/{interval.video}",
        ])
    write_rows(path, rows)


def write_mmew_sheet(path: str | Path, samples: Iterable[Sample]) -> None:
    """MMEW_Final.xlsx: Subject, Filename, Onset/Apex/OffsetFrame, remarks, Action Units, emotion.

    ``remarks`` comes from ``attributes["remarks"]`` when present.
    """
    rows: list[Sequence[object]] = [MMEW_COLUMNS]
    for sample in samples:
        rows.append([
            sample.subject, sample.sample_id, sample.onset, sample.apex, sample.offset,
            sample.attributes.get("remarks"), _join_aus(sample.action_units), sample.emotion,
        ])
    write_rows(path, rows)


def write_casme3_sheet(path: str | Path, samples: Iterable[Sample]) -> None:
    """CAS(ME)^3 part A csv as edited by HTNet: emotion plus its 7- and 3-class label ids.

    ``Filename`` is ``attributes["clip"]`` (the reader's sample id is ``<clip>_<onset>``);
    ``label_for_7`` / ``label_for_3`` are the class indices of ``labels["casme3-7"]`` /
    ``labels["casme3-3"]`` (the 3-class cell is empty when the map drops the emotion);
    image columns point at ``<subject>/<clip>/color/<frame>.jpg``.
    """
    seven = CLASS_MAPS["casme3-7"]
    three = CLASS_MAPS["casme3-3"]
    rows: list[Sequence[object]] = [CASME3_COLUMNS]
    for sample in samples:
        clip = sample.attributes.get("clip", sample.sample_id)
        folder = f"{sample.subject}/{clip}/color"
        label_3 = sample.labels.get(three.name)
        rows.append([
            sample.subject, clip, sample.onset, sample.apex, sample.offset,
            _join_aus(sample.action_units),
            sample.attributes.get("objective_class"),
            sample.emotion,
            seven.index(sample.labels[seven.name]),
            None if label_3 is None else three.index(label_3),
            f"{folder}/{sample.apex}.jpg", f"{folder}/{sample.onset}.jpg", f"{folder}/{sample.offset}.jpg",
        ])
    write_rows(path, rows)


def write_composite_sheet(path: str | Path, samples: Iterable[Sample]) -> None:
    """The MEGC2019 composite csv (HTNet's combined_3_class2_for_optical_flow.csv).

    ``label`` is the megc3 class index; ``imagename`` the apex crop's file name, taken
    from ``attributes["imagename"]`` or built as ``<sub>_<id>.jpg``. Flow images are
    written separately with :func:`write_composite_flow_images`.
    """
    megc3 = CLASS_MAPS["megc3"]
    rows: list[Sequence[object]] = [COMPOSITE_COLUMNS]
    for sample in samples:
        image_name = sample.attributes.get("imagename", f"{sample.subject}_{sample.sample_id}.jpg")
        rows.append([
            sample.source, sample.subject, sample.sample_id, megc3.index(sample.labels[megc3.name]),
            None, image_name, None,
        ])
    write_rows(path, rows)


def write_composite_flow_images(root: str | Path, images: Iterable[tuple[Sample, np.ndarray]]) -> None:
    """28x28x3 u/v/strain PNGs named as the composite names them (space before '.png')."""
    from training.datasets.megc2019_flow import flow_image_path

    for sample, image in images:
        write_frames(lambda _: flow_image_path(Path(root), sample.subject, sample.sample_id), [(0, image)])


def write_clip_frames(dataset: str, root: str | Path, sample: Sample, images: Sequence[np.ndarray]) -> tuple[Path, ...]:
    """Write a clip's frames where ``dataset``'s reader looks for them, numbered from ``sample.onset``.

    For SMIC this *is* the annotation (the folder layout); for CASME II, SAMM, MMEW and
    CAS(ME)^3 it is the frame tree beside the sheet.
    """
    module = reader_module(dataset)
    first = sample.onset if sample.onset is not None else 0
    numbers = range(first, first + len(images))
    return write_frames(lambda number: module.frame_path(Path(root), sample, number), zip(numbers, images))


def _join_aus(action_units: Sequence[str]) -> str:
    return "+".join(action_units)


def _strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix):] if text.lower().startswith(prefix) else text


def _duration(onset: int | None, offset: int | None) -> int | None:
    """SAMM's duration convention: frames from onset to offset inclusive."""
    if onset is None or offset is None:
        return None
    return offset - onset + 1


def _samm_inducement(name: str) -> int | None:
    """SAMM names clips ``<subject>_<inducement>_<n>``: the middle number is the inducement code."""
    parts = name.split("_")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
