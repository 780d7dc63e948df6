"""Read and write annotation sheets as plain rows of cells, whatever the file format.

The datasets publish their annotations as ``.xlsx`` workbooks or as ``.csv`` exports of
those workbooks (some with preamble rows above the header, some with no header at all).
Readers and writers work on one representation — a list of rows, each a list of cells —
so a reader handles the ``.xlsx`` and the ``.csv`` version of a sheet with the same code.

Row numbers handed to :class:`~engines.errors.InputError` are 1-based, as a spreadsheet
program or a text editor shows them.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from engines.errors import InputError

log = logging.getLogger(__name__)

Cell = object
Row = list[Cell]

EXCEL_SUFFIXES = (".xlsx", ".xlsm")


def read_rows(path: str | Path, sheet_name: str | None = None) -> list[Row]:
    """All rows of a ``.csv`` or ``.xlsx`` file; trailing empty cells are dropped.

    ``sheet_name`` picks a worksheet in a workbook (default: the first one); it is
    ignored for csv. Excel keeps numbers as numbers (``46``), csv gives text (``'46'``):
    callers parse cells with :func:`cell_text` / :func:`cell_int`, which accept both.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("annotation sheet not found", path=path)
    suffix = path.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        rows = _read_xlsx(path, sheet_name)
    elif suffix == ".csv":
        rows = _read_csv(path)
    else:
        raise InputError(f"unsupported sheet format {suffix!r} (expected .csv or .xlsx)", path=path)
    return [_trim(row) for row in rows]


def write_rows(path: str | Path, rows: Iterable[Sequence[Cell]], sheet_name: str = "Sheet1") -> None:
    """Write rows to ``.csv`` or ``.xlsx`` (chosen by suffix); None cells are left empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        import openpyxl

        workbook = openpyxl.Workbook()
        sheet = workbook.active
        sheet.title = sheet_name
        for row in rows:
            sheet.append(list(row))
        workbook.save(path)
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            for row in rows:
                writer.writerow(["" if cell is None else cell for cell in row])
    else:
        raise InputError(f"unsupported sheet format {suffix!r} (expected .csv or .xlsx)", path=path)


def cell_text(value: Cell) -> str:
    """A cell as stripped text; Excel's whole floats (``12.0``) become ``'12'``."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def cell_int(value: Cell, *, path: Path, row: int, column: str, missing: Sequence[str] = ()) -> int | None:
    """Parse a frame-number cell; text listed in ``missing`` (e.g. ``'/'``, ``'-1'``) means None."""
    text = cell_text(value)
    if text in missing:
        return None
    try:
        number = float(text)
    except ValueError:
        raise InputError(f"expected an integer frame number, got {text!r}", path=path, row=row, column=column) from None
    if not number.is_integer():
        raise InputError(f"expected an integer frame number, got {text!r}", path=path, row=row, column=column)
    return int(number)


def find_header_row(rows: Sequence[Row], required: Sequence[str], *, path: Path) -> int:
    """Index (0-based) of the first row holding every ``required`` column name.

    Sheets such as SAMM's carry a citation preamble of varying length above the header,
    so the header is found by content, not by position.
    """
    wanted = {name.lower() for name in required}
    for index, row in enumerate(rows):
        if wanted <= {cell_text(cell).lower() for cell in row}:
            return index
    raise InputError(f"no header row with the columns {', '.join(required)}", path=path)


def _read_xlsx(path: Path, sheet_name: str | None) -> list[Row]:
    import openpyxl

    # openpyxl raises many unrelated types for a corrupt file (zipfile, XML, KeyError, ValueError
    # ...), and reads the worksheet's XML only while its rows are iterated: both steps are guarded.
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:
        raise InputError(f"cannot read workbook: {_one_line(exc)}", path=path) from exc
    try:
        if sheet_name is not None and sheet_name not in workbook.sheetnames:
            raise InputError(f"no worksheet {sheet_name!r} (has {', '.join(workbook.sheetnames)})", path=path)
        if not workbook.worksheets:
            raise InputError("workbook holds no worksheet", path=path)
        sheet = workbook.worksheets[0] if sheet_name is None else workbook[sheet_name]
        return [list(row) for row in sheet.iter_rows(values_only=True)]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read worksheet: {_one_line(exc)}", path=path) from exc
    finally:
        workbook.close()


def _read_csv(path: Path) -> list[Row]:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - cp1252 decodes nearly everything
        raise InputError("sheet is neither UTF-8 nor cp1252 text", path=path)
    if encoding != "utf-8-sig":
        log.debug("%s: decoded as %s", path, encoding)
    # newline="": the csv module splits records itself, so a quoted line break stays in its cell.
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return [list(row) for row in reader]
    except csv.Error as exc:  # e.g. a cell longer than the csv module's limit (131072 characters)
        raise InputError(f"not a readable csv: {exc}", path=path, row=reader.line_num) from None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _trim(row: Row) -> Row:
    end = len(row)
    while end and cell_text(row[end - 1]) == "":
        end -= 1
    return list(row[:end])
