"""Errors that the ``mer`` command line reports as one line and a non-zero exit.

They live in ``engines`` because it is the package every other package may depend on.
"""

from __future__ import annotations

from pathlib import Path


class MerError(Exception):
    """An expected failure caused by the user's input, not by a bug in mer."""


class InputError(MerError, ValueError):
    """Bad input data: names the file and, where known, the row, column, field or frame.

    ``row`` is the 1-based line (csv) or sheet row (xlsx) as a spreadsheet program shows it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.row = row
        self.column = column
        self.reason = message
        where = []
        if path is not None:
            text = str(path)  # a file name may hold a line break; the message stays one line
            where.append(text if text.isprintable() else repr(text)[1:-1])
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(MerError, ValueError):
    """A config file with an unknown key or a bad value; names file, key and the expected form."""
