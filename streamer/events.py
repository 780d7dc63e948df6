"""The ``mer.event/1`` record: one recognised expression, as published on ZeroMQ.

An event is built in two steps because two of its fields only exist at publish time:
``make_event`` turns a spotted interval plus the engine's verdict into a *draft*
(everything but ``seq``, ``latency_ms`` and ``emitted_at``; it carries the monotonic
``captured_at`` of the offset frame instead), and ``complete_event`` stamps the draft
when it is published. ``validate_event`` checks a finished event field by field so a
bad producer fails loudly, with the field named, before anything reaches the journal;
``decode_event`` is the consumer's side: bytes off the wire, checked the same way.
docs/events.md describes the schema.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Protocol

from engines.errors import InputError

__all__ = [
    "EVENT_FIELDS",
    "KINDS",
    "SCHEMA",
    "EventSchemaError",
    "IntervalLike",
    "complete_event",
    "decode_event",
    "is_integer",
    "make_event",
    "utc_timestamp",
    "validate_event",
]

SCHEMA = "mer.event/1"
KINDS = ("micro", "macro")
ENGINE_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+$")  # name@version


class EventSchemaError(InputError):
    """An event that does not follow ``mer.event/1``; ``field`` is the dotted field name."""

    def __init__(self, field: str, problem: str, **where: Any) -> None:
        self.field = field
        super().__init__(f"event field {field!r}: {problem}", **where)


class IntervalLike(Protocol):
    """What ``make_event`` needs from a spotted interval (``streamer.spotting.SpottedInterval``)."""

    onset: int
    apex: int
    offset: int
    onset_t: float
    apex_t: float
    offset_t: float
    kind: str
    intensity: float


class _Bad(Exception):
    """Raised by a field check; ``subfield`` extends the field name (``onset`` -> ``onset.t``)."""

    def __init__(self, expected: str, value: Any, subfield: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value
        self.subfield = subfield


def is_integer(value: Any) -> bool:
    """An ``int`` but not a ``bool`` (JSON true is not a number)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (is_integer(value) or isinstance(value, float)) and math.isfinite(value)


def _int_at_least(minimum: int) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not (is_integer(value) and value >= minimum):
            raise _Bad(f"an integer >= {minimum}", value)

    return check


def _check_text(value: Any) -> None:
    if not (isinstance(value, str) and value.strip()):
        raise _Bad("a non-empty string", value)


def _check_number(value: Any) -> None:
    if not _is_number(value):
        raise _Bad("a finite number", value)


def _check_non_negative(value: Any) -> None:
    if not (_is_number(value) and value >= 0):
        raise _Bad("a finite number >= 0", value)


def _check_schema(value: Any) -> None:
    if value != SCHEMA:
        raise _Bad(repr(SCHEMA), value)


def _check_kind(value: Any) -> None:
    if value not in KINDS:
        raise _Bad(" or ".join(repr(kind) for kind in KINDS), value)


def _check_engine(value: Any) -> None:
    if not (isinstance(value, str) and ENGINE_PATTERN.match(value)):
        raise _Bad("'name@version'", value)


def _check_time_point(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise _Bad("an object {frame, t}", value)
    if set(value) != {"frame", "t"}:
        raise _Bad("exactly the keys 'frame' and 't'", sorted(value))
    if not (is_integer(value["frame"]) and value["frame"] >= 0):
        raise _Bad("an integer >= 0", value["frame"], ".frame")
    if not (_is_number(value["t"]) and value["t"] >= 0):
        raise _Bad("seconds of stream time, a finite number >= 0", value["t"], ".t")


def _check_scores(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise _Bad("an object label -> probability", value)
    for label, probability in value.items():
        if not (isinstance(label, str) and label):
            raise _Bad("non-empty string labels", label)
        if not (_is_number(probability) and 0 <= probability <= 1):
            raise _Bad("a probability in [0, 1]", probability, f".{label}")


def _check_emitted_at(value: Any) -> None:
    expected = "a UTC ISO-8601 timestamp such as '2026-01-31T12:00:00.000000Z'"
    if not isinstance(value, str):
        raise _Bad(expected, value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Bad(expected, value) from None
    if parsed.utcoffset() is None or parsed.utcoffset().total_seconds() != 0:
        raise _Bad(expected, value)


# Field -> check, in the order events are written.
EVENT_FIELDS: dict[str, Callable[[Any], None]] = {
    "schema": _check_schema,
    "seq": _int_at_least(1),
    "stream": _check_text,
    "face": _int_at_least(0),
    "onset": _check_time_point,
    "apex": _check_time_point,
    "offset": _check_time_point,
    "kind": _check_kind,
    "label": _check_text,
    "scores": _check_scores,
    "intensity": _check_number,
    "engine": _check_engine,
    "latency_ms": _check_non_negative,
    "emitted_at": _check_emitted_at,
}
STAMPED_FIELDS = ("seq", "latency_ms", "emitted_at")
DRAFT_FIELDS: dict[str, Callable[[Any], None]] = {
    **{name: check for name, check in EVENT_FIELDS.items() if name not in STAMPED_FIELDS},
    "captured_at": _check_number,
}


def _check_fields(record: Any, fields: Mapping[str, Callable[[Any], None]], where: dict[str, Any]) -> None:
    if not isinstance(record, Mapping):
        raise InputError(f"an event must be a JSON object, got {type(record).__name__}", **where)
    for name, check in fields.items():
        if name not in record:
            raise EventSchemaError(name, "required field is missing", **where)
        try:
            check(record[name])
        except _Bad as bad:
            problem = f"expected {bad.expected}, got {bad.value!r}"
            raise EventSchemaError(name + bad.subfield, problem, **where) from None
    unknown = sorted(set(record) - set(fields))
    if unknown:
        raise EventSchemaError(str(unknown[0]), "unknown field", **where)
    # Relations between fields, once each one is well formed.
    if not record["onset"]["frame"] <= record["apex"]["frame"] <= record["offset"]["frame"]:
        frames = [record[key]["frame"] for key in ("onset", "apex", "offset")]
        raise EventSchemaError("apex", f"expected onset <= apex <= offset frames, got {frames}", **where)
    if record["scores"] and record["label"] not in record["scores"]:
        raise EventSchemaError("label", f"expected one of the scored labels {sorted(record['scores'])}, "
                               f"got {record['label']!r}", **where)


def validate_event(event: Any, *, path: Any = None, row: int | None = None) -> dict[str, Any]:
    """Check ``event`` against ``mer.event/1``; returns it, or raises ``EventSchemaError`` naming the field.

    ``path``/``row`` say where the event was read from (a journal line), for the message.
    """
    where = {key: value for key, value in (("path", path), ("row", row)) if value is not None}
    _check_fields(event, EVENT_FIELDS, where)
    return event


def decode_event(payload: bytes | str, *, path: Any = None, row: int | None = None) -> dict[str, Any]:
    """Parse one published payload into a checked ``mer.event/1`` event.

    Anything else raises ``InputError``: bytes that are not JSON (or nest deeper than Python
    can parse), or a JSON value that breaks the schema (``EventSchemaError``, naming the field).
    """
    where = {key: value for key, value in (("path", path), ("row", row)) if value is not None}
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InputError(f"not a JSON event ({type(exc).__name__}: {exc})", **where) from None
    return validate_event(event, **where)


def make_event(
    interval: IntervalLike,
    *,
    stream: str,
    face: int,
    label: str,
    scores: Mapping[str, float],
    engine: str,
    captured_at: float,
    intensity: float | None = None,
) -> dict[str, Any]:
    """A draft event for a spotted interval and the engine's verdict on it.

    ``captured_at`` is the ``time.monotonic()`` at which the interval's offset frame was
    read; the publisher turns it into ``latency_ms``. ``intensity`` defaults to the
    spotter's. Raises ``EventSchemaError`` for a value the schema does not allow.
    """
    draft = {
        "schema": SCHEMA,
        "stream": stream,
        "face": face,
        "onset": {"frame": interval.onset, "t": interval.onset_t},
        "apex": {"frame": interval.apex, "t": interval.apex_t},
        "offset": {"frame": interval.offset, "t": interval.offset_t},
        "kind": interval.kind,
        "label": label,
        "scores": {name: float(probability) for name, probability in scores.items()},
        "intensity": float(interval.intensity if intensity is None else intensity),
        "engine": engine,
        "captured_at": captured_at,
    }
    _check_fields(draft, DRAFT_FIELDS, {})
    return draft


def utc_timestamp(moment: datetime | None = None) -> str:
    """UTC ISO-8601 with microseconds and a ``Z``: the form of ``emitted_at``."""
    moment = datetime.now(timezone.utc) if moment is None else moment.astimezone(timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def complete_event(draft: Mapping[str, Any], *, seq: int, now: float | None = None,
                   emitted_at: str | None = None) -> dict[str, Any]:
    """Stamp a draft with its ``seq``, ``latency_ms`` (from ``captured_at`` to ``now``) and ``emitted_at``.

    ``now`` is a ``time.monotonic()`` reading (default: this instant). The result is
    validated, and has the fields in schema order.
    """
    if "captured_at" not in draft:
        raise EventSchemaError("captured_at", "required field is missing (build drafts with make_event)")
    now = time.monotonic() if now is None else now
    stamped = {
        **{key: value for key, value in draft.items() if key != "captured_at"},
        "seq": seq,
        "latency_ms": round(max(0.0, (now - draft["captured_at"]) * 1000.0), 3),
        "emitted_at": utc_timestamp() if emitted_at is None else emitted_at,
    }
    event = {name: stamped[name] for name in EVENT_FIELDS if name in stamped}
    event.update({key: value for key, value in stamped.items() if key not in event})  # unknown keys: rejected below
    return validate_event(event)
