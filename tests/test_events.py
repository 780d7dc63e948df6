"""The mer.event/1 record: drafts, stamping, and validation that names the bad field."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from engines.errors import InputError
from streamer.events import (
    EVENT_FIELDS,
    EventSchemaError,
    complete_event,
    make_event,
    utc_timestamp,
    validate_event,
)


@dataclass(frozen=True)
class Interval:
    """Shaped like streamer.spotting.SpottedInterval."""

    onset: int = 100
    apex: int = 106
    offset: int = 112
    onset_t: float = 3.3333
    apex_t: float = 3.5333
    offset_t: float = 3.7333
    kind: str = "micro"
    score: float = 0.9
    intensity: float = 0.42


def draft(**overrides):
    arguments = dict(stream="cam0", face=3, label="surprise", scores={"negative": 0.1, "positive": 0.2,
                     "surprise": 0.7}, engine="ststnet@1.2", captured_at=1000.0)
    arguments.update(overrides)
    return make_event(Interval(), **arguments)


def full_event():
    return complete_event(draft(), seq=7, now=1000.25, emitted_at="2026-01-31T12:00:00.000000Z")


def test_make_and_complete_event_gives_the_documented_record():
    event = full_event()
    assert event == {
        "schema": "mer.event/1",
        "seq": 7,
        "stream": "cam0",
        "face": 3,
        "onset": {"frame": 100, "t": 3.3333},
        "apex": {"frame": 106, "t": 3.5333},
        "offset": {"frame": 112, "t": 3.7333},
        "kind": "micro",
        "label": "surprise",
        "scores": {"negative": 0.1, "positive": 0.2, "surprise": 0.7},
        "intensity": 0.42,
        "engine": "ststnet@1.2",
        "latency_ms": 250.0,
        "emitted_at": "2026-01-31T12:00:00.000000Z",
    }
    assert list(event) == list(EVENT_FIELDS)  # schema order
    assert json.loads(json.dumps(event)) == event


def test_draft_carries_capture_time_until_stamped():
    record = draft()
    assert record["captured_at"] == 1000.0
    assert "seq" not in record and "latency_ms" not in record and "emitted_at" not in record
    assert draft(intensity=0.9)["intensity"] == 0.9  # the engine may override the spotter's intensity


def test_emitted_at_is_utc_iso8601():
    stamp = utc_timestamp(datetime(2026, 1, 31, 13, 0, 0, 5, tzinfo=timezone.utc))
    assert stamp == "2026-01-31T13:00:00.000005Z"
    event = complete_event(draft(), seq=1, now=1000.0)
    assert datetime.fromisoformat(event["emitted_at"]).utcoffset().total_seconds() == 0
    assert event["latency_ms"] == 0.0


@pytest.mark.parametrize("field", list(EVENT_FIELDS))
def test_missing_field_is_named(field):
    event = full_event()
    del event[field]
    with pytest.raises(EventSchemaError, match=f"event field '{field}': required field is missing") as info:
        validate_event(event)
    assert info.value.field == field


def _set(event, dotted, value):
    *parents, last = dotted.split(".")
    target = event
    for key in parents:
        target = target[key]
    target[last] = value


@pytest.mark.parametrize(
    "field, value, error_field",
    [
        ("schema", "mer.event/2", "schema"),
        ("seq", 0, "seq"),
        ("seq", "7", "seq"),
        ("seq", True, "seq"),
        ("stream", "", "stream"),
        ("face", -1, "face"),
        ("face", 1.0, "face"),
        ("onset", [100, 3.3], "onset"),
        ("onset.frame", "100", "onset.frame"),
        ("apex.t", float("nan"), "apex.t"),
        ("offset.t", -0.1, "offset.t"),
        ("kind", "nano", "kind"),
        ("label", 3, "label"),
        ("scores", [0.1, 0.9], "scores"),
        ("scores.surprise", 1.5, "scores.surprise"),
        ("scores.positive", "0.2", "scores.positive"),
        ("intensity", None, "intensity"),
        ("engine", "ststnet", "engine"),
        ("latency_ms", -1, "latency_ms"),
        ("emitted_at", "2026-01-31 12:00:00", "emitted_at"),
        ("emitted_at", "2026-01-31T12:00:00+02:00", "emitted_at"),
        ("apex.frame", 99, "apex"),  # before the onset
        ("label", "happiness", "label"),  # not among the scores
    ],
)
def test_wrong_value_is_named(field, value, error_field):
    event = full_event()
    _set(event, field, value)
    with pytest.raises(EventSchemaError) as info:
        validate_event(event)
    assert info.value.field == error_field
    assert str(info.value).startswith(f"event field '{error_field}': ")


def test_unknown_field_and_non_object_are_rejected():
    event = full_event()
    event["captured_at"] = 1.0
    with pytest.raises(EventSchemaError, match="'captured_at': unknown field"):
        validate_event(event)
    with pytest.raises(InputError, match="must be a JSON object"):
        validate_event([1, 2])


def test_validation_error_names_where_the_event_came_from(tmp_path):
    event = full_event()
    event["kind"] = "nano"
    with pytest.raises(EventSchemaError) as info:
        validate_event(event, path=tmp_path / "events.jsonl", row=12)
    assert str(info.value) == f"{tmp_path / 'events.jsonl'}, row 12: event field 'kind': expected 'micro' or " \
                              "'macro', got 'nano'"


def test_make_event_rejects_bad_values_early():
    with pytest.raises(EventSchemaError, match="'engine'"):
        draft(engine="no-version")
    with pytest.raises(EventSchemaError, match="'captured_at'"):
        draft(captured_at=float("inf"))
    with pytest.raises(EventSchemaError, match="'captured_at': required"):
        complete_event({key: value for key, value in draft().items() if key != "captured_at"}, seq=1)


def test_an_engine_without_classes_may_send_empty_scores():
    event = complete_event(draft(scores={}, label="unknown"), seq=1, now=1000.0)
    assert event["scores"] == {} and event["label"] == "unknown"


def test_validate_does_not_modify_the_event():
    event = full_event()
    before = copy.deepcopy(event)
    assert validate_event(event) is event
    assert event == before
