"""Known errors in the official annotation sheets, corrected where the right value is known.

Each fix is keyed by (dataset, subject, sample id, field), asserts the value the sheet
is known to hold, and says why it is changed. A sheet already holding the corrected
value (another release of the same sheet) is left alone; any third value means the
sheet is not the one the fix was written for, and reading stops with an InputError
instead of silently "fixing" the wrong thing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from training.datasets.records import Record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fix:
    old: int | None
    new: int | None
    reason: str


FIXES: dict[tuple[str, str, str, str], Fix] = {
    ("samm", "028", "028_4_1", "apex"): Fix(
        1143, 1100, "v2 xlsx apex lies after offset 1134; the csv release of the sheet (MEGC2024-CODE) has 1100"
    ),
    ("samm", "032", "032_3_1", "apex"): Fix(
        1930, 4930, "v2 xlsx apex lies before onset 4896 (dropped digit); the csv release has 4930"
    ),
}


def apply_fixes(dataset: str, subject: str, sample_id: str, field: str, value: int | None, record: Record, column: str) -> int | None:
    """``value`` corrected by :data:`FIXES`, or unchanged when no fix concerns it."""
    fix = FIXES.get((dataset, subject, sample_id, field))
    if fix is None or value == fix.new:
        return value
    if value != fix.old:
        raise record.error(f"expected {fix.old} here (known sheet error: {fix.reason}), found {value}", column)
    log.debug("%s row %d: %s %s -> %s (%s)", record.path, record.row, field, fix.old, fix.new, fix.reason)
    return fix.new
