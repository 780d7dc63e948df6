"""The publisher's append-only event journal: one JSON event per line, on disk before it is sent.

The journal is what makes ``seq`` survive a restart and what subscribers replay missed
events from. Each event is written with one ``write`` and ``fsync``-ed before the
publisher puts it on the wire, so a crash can at worst leave a *torn* last line (an
event that was never published); it is ignored with a warning when the journal is
read, and cut off when a publisher reopens the journal for writing. A bad line
anywhere else is real corruption and an ``InputError`` naming the line.

One publisher writes a journal at a time (an exclusive ``flock``); readers need no lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from engines.errors import InputError, MerError
from streamer.events import is_integer

__all__ = ["EventJournal", "encode_event", "read_journal"]

log = logging.getLogger(__name__)


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
        except (ValueError, KeyError, TypeError):
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
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
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
        """Write, flush and fsync one event; returns its encoded JSON (the bytes to publish)."""
        payload = encode_event(event)
        line = payload + b"\n"
        seq = event.get("seq")
        with self._lock:
            if self._fd < 0:
                raise ValueError(f"{self.path}: journal is closed")
            last = self._index.seqs[-1] if self._index.seqs else 0
            if not (is_integer(seq) and seq > last):
                raise ValueError(f"{self.path}: seq must increase, got {seq!r} after {last}")
            written = 0
            while written < len(line):
                written += os.write(self._fd, line[written:])
            if self.fsync:
                os.fsync(self._fd)
            self._index.seqs.append(seq)
            self._index.starts.append(self._index.end)
            self._index.end += len(line)
        return payload

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
