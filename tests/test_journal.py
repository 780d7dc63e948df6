"""The append-only event journal: seq continuity, durable lines, torn tails and real corruption."""

from __future__ import annotations

import json
import logging

import pytest

from engines.errors import InputError, MerError
from streamer.journal import EventJournal, encode_event, read_journal


def event(seq, label="surprise"):
    return {"schema": "mer.event/1", "seq": seq, "label": label, "text": "näive"}


def test_append_writes_one_line_per_event_and_reads_ranges(tmp_path):
    path = tmp_path / "journal.jsonl"
    with EventJournal(path) as journal:
        assert journal.last_seq() == 0
        payloads = [journal.append(event(seq)) for seq in (1, 2, 3, 4)]
        assert journal.last_seq() == 4
        # On disk as soon as append returns.
        assert path.read_bytes() == b"".join(payload + b"\n" for payload in payloads)
        assert payloads[0] == encode_event(event(1))
        assert json.loads(payloads[0]) == event(1)
        assert [e["seq"] for e in journal.read(2)] == [2, 3, 4]
        assert [e["seq"] for e in journal.read(2, 3)] == [2, 3]
        assert journal.read(5) == []
        assert journal.read_lines(1, limit=2) == payloads[:2]
    assert read_journal(path, 3) == [event(3), event(4)]


def test_seq_continues_after_reopening(tmp_path):
    path = tmp_path / "journal.jsonl"
    with EventJournal(path) as journal:
        journal.append(event(1))
        journal.append(event(2))
    with EventJournal(path) as journal:
        assert journal.last_seq() == 2
        journal.append(event(3))
        assert [e["seq"] for e in journal.read(1)] == [1, 2, 3]


def test_seq_must_increase(tmp_path):
    with EventJournal(tmp_path / "journal.jsonl") as journal:
        journal.append(event(5))
        for bad in (5, 4, "6", None):
            with pytest.raises(ValueError, match="seq must increase"):
                journal.append(event(bad))
        journal.append(event(9))  # gaps are allowed, only the order is enforced
        assert journal.last_seq() == 9


def test_torn_last_line_is_ignored_with_a_warning_and_cut_off_by_the_writer(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    with EventJournal(path) as journal:
        journal.append(event(1))
        journal.append(event(2))
    whole = path.read_bytes()
    torn = encode_event(event(3))[:25]  # a crash in the middle of writing event 3
    path.write_bytes(whole + torn)

    with caplog.at_level(logging.WARNING, logger="streamer.journal"):
        assert [e["seq"] for e in read_journal(path)] == [1, 2]
    assert "line 3 is torn (25 bytes without a newline" in caplog.text
    assert path.read_bytes() == whole + torn  # readers do not modify the journal

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamer.journal"):
        journal = EventJournal(path)
    assert "line 3 is torn" in caplog.text
    with journal:
        assert journal.last_seq() == 2
        journal.append(event(3))
    assert path.read_bytes() == whole + encode_event(event(3)) + b"\n"
    assert [e["seq"] for e in read_journal(path)] == [1, 2, 3]


def test_corrupt_line_before_the_end_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_bytes(encode_event(event(1)) + b"\n" + b'{"seq": 2, "label"\n' + encode_event(event(3)) + b"\n")
    with pytest.raises(InputError) as info:
        EventJournal(path)
    assert str(info.value) == f"{path}, row 2: not a journaled event (JSON object with 'seq')"
    path.write_bytes(encode_event(event(2)) + b"\n" + encode_event(event(2)) + b"\n")
    with pytest.raises(InputError, match=r"row 2: 'seq' must be an integer above the previous line's 2, got 2"):
        read_journal(path)


def test_only_one_writer_at_a_time(tmp_path):
    path = tmp_path / "journal.jsonl"
    with EventJournal(path):
        with pytest.raises(MerError, match="journal is in use by another publisher"):
            EventJournal(path)
        assert read_journal(path) == []  # reading needs no lock
    with EventJournal(path) as journal:  # released on close
        journal.append(event(1))


def test_closed_journal_refuses_appends(tmp_path):
    journal = EventJournal(tmp_path / "sub" / "journal.jsonl")  # creates the folder
    journal.close()
    with pytest.raises(ValueError, match="closed"):
        journal.append(event(1))
