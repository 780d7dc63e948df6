"""The publisher's append-only event journal: one JSON event per line, on disk before it is sent.

The journal is what makes ``seq`` survive a restart and what subscribers replay missed
events from. Each event is written with one ``write`` and ``fsync``-ed before the
publisher puts it on the wire, so a crash can at worst leave a *torn* last line (an
event that was never published); it is ignored with a warning when the journal is
read, and cut off when a publisher reopens the journal for writing. A bad line
anywhere else is real corruption and an ``InputError`` naming the line.

One publisher writes a journal at a time (an exclusive ``flock``); readers need no lock.

A write that fails (a full disk, a file-size limit, an I/O error) is cut back to the last
complete line at once and raised as :class:`JournalWriteError`; the journal stays well formed
and takes the next append as soon as the disk does (docs/reliability.md).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
import threading
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from engines.errors import InputError, MerError
from streamer.events import is_integer

__all__ = ["EventJournal", "JournalWriteError", "encode_event", "read_journal"]

log = logging.getLogger(__name__)


# Errors that mean "no room": the disk or the quota is full, or the file hit its size limit.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class JournalWriteError(MerError):
    """An event could not be journaled; nothing of it is left in the journal.

    ``reason`` is ``"journal_full"`` (no space, quota or file-size limit) or ``"journal_error"``
    (any other I/O error), the label a dropped event is counted under.
    """

    def __init__(self, path: Path, seq: Any, error: OSError) -> None:
        self.error = error
        self.reason = "journal_full" if error.errno in _NO_ROOM else "journal_error"
        super().__init__(f"{path}: cannot journal event seq {seq}: {error.strerror or error}")


def encode_event(event: dict[str, Any]) -> bytes:
    """The compact UTF-8 JSON of an event: the journal line (without newline) and the wire payload."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


@dataclass
class _Index:
    """Where each journaled event's line lies: ``seqs[i]`` starts at byte ``starts[i]``."""

    seqs: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    end: int = 0  # bytes of complete lines
    torn: int = 0  # bytes of a torn last line after ``end``


def _scan(stream: BinaryIO, path: Path) -> _Index:
    index = _Index()
    offset = 0
    for row, line in enumerate(stream, start=1):
        if not line.endswith(b"\n"):
            index.torn = len(line)
            log.warning("%s: line %d is torn (%d bytes without a newline, left by a crash while writing); "
                        "ignoring it", path, row, len(line))
            break
        try:
            seq = json.loads(line)["seq"]
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: nested too deep to parse
            raise InputError("not a journaled event (JSON object with 'seq')", path=path, row=row) from None
        if not is_integer(seq) or (index.seqs and seq <= index.seqs[-1]):
            previous = index.seqs[-1] if index.seqs else 0
            raise InputError(f"'seq' must be an integer above the previous line's {previous}, got {seq!r}",
                             path=path, row=row)
        index.seqs.append(seq)
        index.starts.append(offset)
        offset += len(line)
    index.end = offset
    return index


def _slice(index: _Index, from_seq: int, to_seq: int | None, limit: int | None) -> tuple[int, int, int]:
    """Positions ``[first, stop)`` in the index of the events ``from_seq..to_seq``, and the byte end."""
    first = bisect_left(index.seqs, from_seq)
    stop = len(index.seqs) if to_seq is None else bisect_left(index.seqs, to_seq + 1)
    if limit is not None:
        stop = min(stop, first + limit)
    stop = max(stop, first)
    end = index.starts[stop] if stop < len(index.seqs) else index.end
    return first, stop, end


def _split_lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def read_journal(path: str | Path, from_seq: int = 1, to_seq: int | None = None) -> list[dict[str, Any]]:
    """The journaled events ``from_seq..to_seq`` (inclusive) of a journal file, without locking it."""
    path = Path(path)
    with path.open("rb") as stream:
        index = _scan(stream, path)
        first, stop, end = _slice(index, from_seq, to_seq, None)
        if first == stop:
            return []
        stream.seek(index.starts[first])
        data = stream.read(end - index.starts[first])
    return [json.loads(line) for line in _split_lines(data)]


class EventJournal:
    """A journal opened for writing by one publisher (and read by its replay server, from any thread)."""

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._torn = False  # a failed append left bytes after the last complete line that are not cut yet
        created = not self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise MerError(f"{self.path}: cannot open the event journal: {exc.strerror or exc}") from None
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):  # a device or a FIFO: no lines to scan, no seq to keep
            os.close(self._fd)
            raise MerError(f"{self.path}: the event journal must be a regular file")
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise MerError(f"{self.path}: journal is in use by another publisher") from None
        try:
            with open(self._fd, "rb", closefd=False) as stream:
                self._index = _scan(stream, self.path)
        except Exception:
            os.close(self._fd)
            raise
        if self._index.torn:
            # Never published (the send follows the fsync), so dropping it loses nothing and keeps lines whole.
            os.ftruncate(self._fd, self._index.end)
            os.fsync(self._fd)
            self._index.torn = 0
        if created and fsync:
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)  # the new file's name is durable too
            finally:
                os.close(directory)

    def last_seq(self) -> int:
        """The ``seq`` of the last journaled event, 0 for an empty journal."""
        with self._lock:
            return self._index.seqs[-1] if self._index.seqs else 0

    def append(self, event: dict[str, Any]) -> bytes:
        """Write, flush and fsync one event; returns its encoded JSON (the bytes to publish).

        Raises :class:`JournalWriteError` when the event could not be made durable; the journal
        then ends at its last complete line, as before the call.
        """
        payload = encode_event(event)
        line = payload + b"\n"
        seq = event.get("seq")
        with self._lock:
            if self._fd < 0:
                raise ValueError(f"{self.path}: journal is closed")
            last = self._index.seqs[-1] if self._index.seqs else 0
            if not (is_integer(seq) and seq > last):
                raise ValueError(f"{self.path}: seq must increase, got {seq!r} after {last}")
            try:
                if self._torn:
                    self._cut_torn_tail()
                written = 0
                while written < len(line):
                    written += os.write(self._fd, line[written:])
                if self.fsync:
                    os.fsync(self._fd)
            except OSError as exc:
                self._torn = True
                try:
                    self._cut_torn_tail()
                except OSError as cut:  # tried again before the next append
                    log.error("%s: cannot cut a failed write back to the last complete line: %s", self.path,
                              cut.strerror or cut)
                raise JournalWriteError(self.path, seq, exc) from None
            self._index.seqs.append(seq)
            self._index.starts.append(self._index.end)
            self._index.end += len(line)
        return payload

    def _cut_torn_tail(self) -> None:
        """Drop whatever a failed append left after the last complete line (shrinking needs no space)."""
        os.ftruncate(self._fd, self._index.end)
        self._torn = False

    def read_lines(self, from_seq: int, to_seq: int | None = None, limit: int | None = None) -> list[bytes]:
        """The encoded events ``from_seq..to_seq`` (inclusive), at most ``limit`` of them."""
        with self._lock:
            if self._fd < 0:
                raise ValueError(f"{self.path}: journal is closed")
            first, stop, end = _slice(self._index, from_seq, to_seq, limit)
            if first == stop:
                return []
            start = self._index.starts[first]
            data = os.pread(self._fd, end - start, start)
        return _split_lines(data)

    def read(self, from_seq: int, to_seq: int | None = None) -> list[dict[str, Any]]:
        """The events ``from_seq..to_seq`` (inclusive) as dicts."""
        return [json.loads(line) for line in self.read_lines(from_seq, to_seq)]

    def close(self) -> None:
        """Release the journal (everything appended is already on disk)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)  # closing drops the flock
                self._fd = -1

    def __enter__(self) -> EventJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
