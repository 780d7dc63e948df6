"""Typed access to one sheet row, with errors that name the file, row and column.

Every reader walks its sheet as :class:`Record` objects and asks for cells by column
name (``record.frame("OnsetFrame")``); a bad cell raises :class:`InputError` pointing at
the exact spreadsheet cell, so a user can fix the sheet without reading mer's code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from engines.errors import InputError
from training.classmaps import EMOTIONS
from training.datasets.tables import Cell, cell_int, cell_text, find_header_row, read_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """One data row of a sheet; ``row`` is 1-based as a spreadsheet shows it."""

    path: Path
    row: int
    cells: dict[str, Cell]

    def error(self, message: str, column: str | None = None) -> InputError:
        return InputError(message, path=self.path, row=self.row, column=column)

    def text(self, column: str) -> str:
        """The cell as text ('' when empty or when an optional column is absent)."""
        return cell_text(self.cells.get(column))

    def required(self, column: str) -> str:
        text = self.text(column)
        if not text:
            raise self.error("empty cell", column)
        return text

    def frame(self, column: str, missing: Sequence[str] = ()) -> int | None:
        """A frame number; a cell whose text is in ``missing`` (e.g. '/', '-1', '0') is None."""
        return cell_int(self.cells.get(column), path=self.path, row=self.row, column=column, missing=missing)

    def required_frame(self, column: str) -> int:
        value = self.frame(column)
        if value is None:  # pragma: no cover - cell_int returns None only for `missing` text
            raise self.error("empty frame number", column)
        return value

    def emotion(self, column: str, dataset: str) -> str:
        """The dataset's own emotion label, lower-case; unknown labels are an error."""
        emotion = self.required(column).lower()
        if emotion not in EMOTIONS[dataset]:
            known = ", ".join(sorted(EMOTIONS[dataset]))
            raise self.error(f"unknown emotion {emotion!r} for {dataset} (known: {known})", column)
        return emotion

    def action_units(self, column: str, empty: Sequence[str] = ()) -> tuple[str, ...]:
        """Action units as written, split on '+' ('4+7+L10' -> ('4', '7', 'L10'))."""
        text = self.text(column)
        if text in empty:
            return ()
        return tuple(part.strip() for part in text.split("+") if part.strip())

    def onset_apex_offset(
        self,
        columns: Sequence[str],
        *,
        missing_apex: Sequence[str] | None = None,
        missing_offset: Sequence[str] | None = None,
    ) -> tuple[int, int | None, int | None]:
        """The three frame columns, checked for order. The onset is required; the apex and the
        offset are too unless ``missing_apex`` / ``missing_offset`` name the texts meaning 'none'."""
        onset_column, apex_column, offset_column = columns
        onset = self.required_frame(onset_column)
        apex = self.required_frame(apex_column) if missing_apex is None else self.frame(apex_column, missing_apex)
        offset = self.required_frame(offset_column) if missing_offset is None else self.frame(offset_column, missing_offset)
        self.check_order(onset, apex, offset, columns)
        return onset, apex, offset

    def expression_kind(self, column: str, kinds: dict[str, str]) -> str:
        """'micro' or 'macro' from a sheet's type cell (matched case-insensitively against ``kinds``)."""
        written = self.text(column)
        kind = kinds.get(written.lower())
        if kind is None:
            raise self.error(f"type {written!r} is neither {' nor '.join(map(repr, kinds))}", column)
        return kind

    def check_order(self, onset: int, apex: int | None, offset: int | None, columns: Sequence[str]) -> None:
        """Reject onset > offset; only log an apex outside onset..offset (real sheets have a few)."""
        onset_column, apex_column, offset_column = columns
        if offset is not None and onset > offset:
            raise self.error(f"onset {onset} is after offset {offset}", offset_column)
        if apex is not None and not (onset <= apex and (offset is None or apex <= offset)):
            log.warning("%s row %d: apex %d outside onset %d .. offset %s", self.path, self.row, apex, onset, offset)


Column = str | tuple[str, ...]


def header_records(
    path: Path, required: Sequence[Column], optional: Sequence[Column] = (), *, sheet_name: str | None = None
) -> Iterator[Record]:
    """Rows below the header of a sheet whose header may follow a preamble.

    A column is a name or a tuple of accepted spellings (``("Action Units", "AU")``); the
    record stores it under the first spelling. The header is the first row holding the
    first two ``required`` columns; a missing required column is an error naming it.
    Column names match case-insensitively; blank rows are skipped.
    """
    rows = read_rows(path, sheet_name)
    header_at = find_header_row(rows, [_spellings(column)[0] for column in required[:2]], path=path)
    in_header = {cell_text(cell).lower(): index for index, cell in reversed(list(enumerate(rows[header_at]))) if cell_text(cell)}
    positions: dict[str, int] = {}
    for column in [*required, *optional]:
        spellings = _spellings(column)
        index = next((in_header[spelling.lower()] for spelling in spellings if spelling.lower() in in_header), None)
        if index is not None:
            positions[spellings[0]] = index
        elif column in required:
            raise InputError("missing column", path=path, row=header_at + 1, column=" or ".join(spellings))
    for number, row in enumerate(rows[header_at + 1 :], start=header_at + 2):
        if row:
            yield Record(path, number, {name: row[index] if index < len(row) else None for name, index in positions.items()})


def _spellings(column: Column) -> tuple[str, ...]:
    return (column,) if isinstance(column, str) else column


def positional_records(path: Path, columns: Sequence[str]) -> Iterator[Record]:
    """Rows of a header-less sheet, cells named by position; short rows are an error."""
    for number, row in enumerate(read_rows(path), start=1):
        if not row:
            continue
        if len(row) < len(columns):
            raise InputError(f"expected {len(columns)} columns, found {len(row)}", path=path, row=number, column=columns[len(row)])
        yield Record(path, number, dict(zip(columns, row)))
