"""CAS(ME)^2 spotting ground truth: ``CAS(ME)^2code_final(Updated).csv`` (MEGC2024-CODE release).

No header row; 11 columns: participant, expression id ('anger1_1'), onset, apex,
offset, AUs ('NULL' when none), emotion class (negative / positive / surprise /
others), type ('macro-expression' / 'micro-expression'), self-reported emotion,
duration (offset - onset), video path ('s15/15_0401girlcrashing'). Quirks: offset 0
means "not annotated" -> None (44 rows); one apex is 0 -> None too; three apexes lie
outside onset..offset (kept, logged). The subject ('s15') and video
('15_0401girlcrashing') come from the path column: the participant column numbers
people 1..22 in another order. ``Interval.emotion`` is the emotion class column.
30 fps.
"""

from __future__ import annotations

from pathlib import Path

from training.datasets.records import positional_records
from training.samples import Interval

NAME = "casme2-spot"
FPS = 30
DEFAULT_SHEETS = ("CAS(ME)^2code_final(Updated).csv",)
COLUMNS = (
    "participant", "expression", "onset", "apex", "offset", "action units", "emotion class", "type",
    "self-reported emotion", "duration", "video path",
)
KINDS = {"macro-expression": "macro", "micro-expression": "micro"}
MISSING_FRAME = ("0",)


def read(root: Path | None, sheet: Path) -> list[Interval]:
    intervals = []
    for record in positional_records(sheet, COLUMNS):
        subject, _, video = record.required("video path").partition("/")
        if not video:
            raise record.error("expected <subject>/<video>, e.g. 's15/15_0401girlcrashing'", "video path")
        onset, apex, offset = record.onset_apex_offset(
            ("onset", "apex", "offset"), missing_apex=MISSING_FRAME, missing_offset=MISSING_FRAME
        )
        kind = record.expression_kind("type", KINDS)
        intervals.append(Interval(
            dataset=NAME,
            subject=subject,
            video=video,
            onset=onset,
            apex=apex,
            offset=offset,
            kind=kind,
            action_units=record.action_units("action units", empty=("NULL",)),
            emotion=record.required("emotion class").lower(),
            expression_id=record.required("expression"),
        ))
    return intervals
