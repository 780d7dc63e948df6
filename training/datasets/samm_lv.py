"""SAMM Long Videos spotting ground truth: ``SAMM_LongVideos_V2_Release`` (.csv or .xlsx).

Nine preamble rows, then the header: Subject ('006'), Filename (the expression,
'006_1_2'; its long video is '006_1'), Inducement Code, Onset, Apex, Offset,
Duration, Type ('Macro' or 'Micro - 1/2'), Action Units, Notes. Quirk: Apex -1 means
"not annotated" -> None (6 rows); -1 in Offset is read the same way. Frame numbers are
long-video indices (not the SAMM micro sheet's). 200 fps.
"""

from __future__ import annotations

from pathlib import Path

from training.datasets.records import header_records
from training.samples import Interval

NAME = "samm-lv"
FPS = 200
DEFAULT_SHEETS = ("SAMM_LongVideos_V2_Release.csv", "SAMM_LongVideos_V2_Release.xlsx")
KINDS = {"macro": "macro", "micro - 1/2": "micro"}
MISSING_FRAME = ("-1",)


def read(root: Path | None, sheet: Path) -> list[Interval]:
    intervals = []
    required = ("Subject", "Filename", "Onset", "Apex", "Offset", "Type", "Action Units")
    for record in header_records(sheet, required):
        expression = record.required("Filename")
        video, separator, _ = expression.rpartition("_")
        if not separator:
            raise record.error("expected <subject>_<inducement>_<n>, e.g. '006_1_2'", "Filename")
        onset, apex, offset = record.onset_apex_offset(
            ("Onset", "Apex", "Offset"), missing_apex=MISSING_FRAME, missing_offset=MISSING_FRAME
        )
        kind = record.expression_kind("Type", KINDS)
        intervals.append(Interval(
            dataset=NAME,
            subject=record.required("Subject").zfill(3),
            video=video,
            onset=onset,
            apex=apex,
            offset=offset,
            kind=kind,
            action_units=record.action_units("Action Units"),
            expression_id=expression,
        ))
    return intervals
