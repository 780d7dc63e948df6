"""``mer stream`` stopped by signals, in a real process: clean stops and hard kills.

SIGTERM and SIGINT (a service manager's stop, Ctrl-C; one handler serves both) end the run
cleanly: pending intervals are flushed, every journaled event also reaches a live subscriber
(the socket is flushed before it closes), the journal is complete and released, and the exit
status is 0, because a stop that was asked for is not a failure. The same holds while a live
source is still being opened. SIGKILL, and the kernel killing the process in the middle of writing a journal line
(SIGXFSZ, by a file-size limit: the write is cut at the limit, then the process dies), leave a
journal that a restarted ``mer stream`` reads up to its last complete line, cutting the torn
one, and continues with the next ``seq``.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamer.cli import main as mer_main
from streamer.journal import EventJournal, read_journal
from streamer.subscriber import EventSubscriber
from tests.streaming_fixtures import REPO, free_port

pytestmark = pytest.mark.slow  # five real mer stream processes, about 35 s of one core

# Three micro-expressions, published about 2.1, 4.3 and 6.9 s into the video.
VIDEO_SECONDS = 8


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("video")
    assert mer_main(["-q", "synth", "long", "--out", str(folder), "--fps", "30", "--duration", str(VIDEO_SECONDS),
                     "--subjects", "1", "--micro", "3", "--macro", "0", "--size", "320x240", "--seed", "7",
                     "--video", "mp4", "--no-frames", "--no-progress"]) == 0
    return next(folder.glob("*.mp4"))


def stream_command(source: str, journal: Path, *extra: str, endpoint: str = "tcp://127.0.0.1:*",
                   python: tuple[str, ...] = ("-m", "streamer.cli")) -> list[str]:
    return [sys.executable, *python, "-q", "stream", "--source", source, "--stream-id", "cam0", "--endpoint", endpoint,
            "--replay-endpoint", "tcp://127.0.0.1:*", "--journal", str(journal), "--no-metrics", *extra]


def start(command: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_events(process: subprocess.Popen, journal: Path, count: int = 1, timeout: float = 120) -> None:
    """Until ``journal`` holds ``count`` complete lines (polled every millisecond)."""
    deadline = time.monotonic() + timeout
    while not (journal.exists() and journal.read_bytes().count(b"\n") >= count):
        assert process.poll() is None, f"mer stream ended early:\n{process.communicate()[1]}"
        assert time.monotonic() < deadline, "no event was journaled"
        time.sleep(0.001)


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out, err


def complete_lines(journal: Path) -> list[dict]:
    """The journal's events, asserting that every line is whole."""
    data = journal.read_bytes()
    assert data.endswith(b"\n")
    events = [json.loads(line) for line in data.splitlines()]
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    return events


def test_sigterm_stops_the_stream_cleanly(video, tmp_path):
    journal = tmp_path / "events.jsonl"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    # Live only (no replay): it receives an event only if the stream really sent it.
    with EventSubscriber(endpoint, None) as subscriber:
        stream = start(stream_command(str(video), journal, "--realtime", endpoint=endpoint))
        try:
            wait_for_events(stream, journal)
            stream.send_signal(signal.SIGTERM)
        finally:
            status, out, err = finish(stream)
        events = complete_lines(journal)
        received = [subscriber.receive(timeout=10) for _ in events]
    assert status == 0, err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("stream cam0: ") and f"events (last seq {len(events)})" in summary
    frames = int(summary.split(": ")[1].split(" frames")[0])
    assert frames < VIDEO_SECONDS * 30  # it stopped before the end of the video
    assert received == events  # including any flushed at the stop: the socket was drained before closing
    with EventJournal(journal) as reopened:  # closed and unlocked
        assert reopened.last_seq() == len(events)


def test_sigint_while_a_live_source_is_being_opened(tmp_path):
    """A UDP stream that sends nothing: opening it waits; Ctrl-C (SIGINT, which takes the same
    path as SIGTERM) ends that wait, cleanly, and without a KeyboardInterrupt traceback."""
    journal = tmp_path / "events.jsonl"
    source = f"udp://127.0.0.1:{free_port()}"
    stream = start(stream_command(source, journal))
    try:
        deadline = time.monotonic() + 120
        while not journal.exists():  # the publisher is up: the source is opened next
            assert stream.poll() is None and time.monotonic() < deadline, "mer stream did not start"
            time.sleep(0.01)
        time.sleep(0.5)  # inside the open, which waits up to [capture.network] open_timeout_s (10 s)
        stream.send_signal(signal.SIGINT)
    finally:
        status, out, err = finish(stream, timeout=30)
    assert status == 0 and "Traceback" not in err, err
    assert out.strip() == f"stream cam0: stopped before {source} opened (last seq 0)"
    assert read_journal(journal) == []


def test_sigkill_mid_write_then_restart_continues_seq(video, tmp_path):
    journal = tmp_path / "events.jsonl"
    # 1. SIGKILL the moment the first event is journaled, in the middle of a realtime run.
    # One line is one write() call, which a signal cannot cut: the journal ends on a whole line.
    first = start(stream_command(str(video), journal, "--realtime"))
    try:
        wait_for_events(first, journal)
        first.send_signal(signal.SIGKILL)
    finally:
        status, _, _ = finish(first)
    assert status == -signal.SIGKILL
    before = journal.read_bytes()
    survivors = complete_lines(journal)
    assert survivors

    # 2. Let the kernel kill the next run inside its first journal write: with a file-size limit
    # 100 bytes above the journal, the write stops at the limit and the retry raises SIGXFSZ
    # (Python ignores it by default; this run restores the default action, death).
    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 100, resource.RLIM_INFINITY))

    entry = ("-c", "import signal, sys; from streamer.cli import main; "
                   "signal.signal(signal.SIGXFSZ, signal.SIG_DFL); sys.exit(main(sys.argv[1:]))")
    no_bytecode = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # the journal is the only file it may write
    second = start(stream_command(str(video), journal, python=entry), preexec_fn=limit_file_size, env=no_bytecode)
    status, _, err = finish(second, timeout=300)
    assert status == -signal.SIGXFSZ, err
    torn = journal.read_bytes()
    assert torn.startswith(before) and len(torn) == len(before) + 100 and not torn.endswith(b"\n")
    assert read_journal(journal) == survivors  # readers skip the torn line

    # 3. Restart: the torn line is cut and seq continues from the last complete record.
    third = start(stream_command(str(video), journal))
    status, out, err = finish(third, timeout=300)
    assert status == 0, err
    events = complete_lines(journal)
    assert journal.read_bytes().startswith(before)
    assert events[: len(survivors)] == survivors and len(events) > len(survivors)
    assert f"line {len(survivors) + 1} is torn (100 bytes without a newline" in err
    assert re.search(rf"\(last seq {len(events)}\), dropped {{}} of \d+ read$", out.strip()), out
