"""Publishing under faults: nobody listening, a slow subscriber, a taken port, a full disk.

Everything is real: ZeroMQ sockets on loopback TCP and on Unix sockets (ipc://, whose small
kernel buffers make a lagging subscriber lose messages quickly), the metrics port held by
another socket, and a journal that really cannot grow: a file-size limit (``RLIMIT_FSIZE``,
the kernel answers EFBIG) in a child process, a tiny tmpfs filled to the last page (ENOSPC;
needs the rights to mount one, skipped otherwise) and a real ``mer stream`` run under a limit.
What is asserted: ``publish`` never waits for a subscriber; the journal holds every published
event and nothing else; what could not be journaled is not sent, counted by reason, and the
stream goes on; a port that is taken stops ``mer stream`` before it starts, leaving nothing
bound or created.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from engines.errors import MerError
from streamer.cli import main as mer_main
from streamer.events import complete_event
from streamer.journal import EventJournal, read_journal
from streamer.publisher import EventPublisher
from streamer.subscriber import EventSubscriber
from tests.streaming_fixtures import REPO, free_port, synth_long
from tests.test_events import draft

ANY_PORT = "tcp://127.0.0.1:*"


def now_draft(face: int = 0) -> dict:
    return draft(face=face, captured_at=time.monotonic())


def test_without_subscribers_every_event_is_journaled_and_replayable(tmp_path):
    with EventPublisher(ANY_PORT, ANY_PORT, tmp_path / "events.jsonl") as publisher:
        published = [publisher.publish(now_draft(face)) for face in range(50)]  # nobody is connected
        assert [event["seq"] for event in published] == list(range(1, 51))
        assert read_journal(publisher.journal.path) == published
        with EventSubscriber(publisher.endpoint, publisher.replay_endpoint, from_seq=1) as late:
            assert [late.receive(timeout=10) for _ in range(50)] == published


def test_a_slow_subscriber_never_holds_the_publisher_back(tmp_path):
    """A real SUB socket over TCP that takes 50 ms per event: publishing 300 events finishes
    long before it has read half of them, and the journal has them all."""
    count = 300
    context = zmq.Context()
    with EventPublisher(ANY_PORT, None, tmp_path / "events.jsonl", context=context) as publisher:
        subscriber = context.socket(zmq.SUB)
        subscriber.linger = 0
        subscriber.subscribe(b"")
        subscriber.connect(publisher.endpoint)
        read: list[int] = []
        stop = threading.Event()

        def read_slowly() -> None:
            while not stop.is_set():
                if subscriber.poll(50):
                    read.append(json.loads(subscriber.recv_multipart()[-1])["seq"])
                    time.sleep(0.05)

        reader = threading.Thread(target=read_slowly)
        reader.start()
        try:
            durations, published = [], []
            for face in range(count):
                start = time.perf_counter()
                published.append(publisher.publish(now_draft(face)))
                durations.append(time.perf_counter() - start)
            read_by_then = len(read)
        finally:
            stop.set()
            reader.join()
            subscriber.close()
        assert read_by_then < count // 2, f"the publisher waited for the subscriber ({read_by_then} read)"
        assert max(durations) < 1.0
        assert read == sorted(read) and set(read) <= {event["seq"] for event in published}
        assert read_journal(publisher.journal.path) == published
    context.term()


def test_what_a_slow_subscriber_misses_is_replayed_from_the_journal(tmp_path):
    """2000 events while the subscriber reads nothing: ZeroMQ drops most of them for it (its
    queues and the Unix socket's buffers hold a few hundred); it finds the missing seqs (a gap
    before a later live event, or silence after the last one) and fetches them from the
    journal, so it still gets every event, once, in order."""
    count = 2000
    endpoint, replay = f"ipc://{tmp_path}/events", f"ipc://{tmp_path}/replay"
    with EventPublisher(endpoint, replay, tmp_path / "events.jsonl", send_hwm=10) as publisher:
        with EventSubscriber(endpoint, replay, from_seq=1, receive_hwm=10) as subscriber:
            published = [publisher.publish(now_draft(0))]
            delivered = [subscriber.receive(timeout=10)]  # connected
            published += [publisher.publish(now_draft(face)) for face in range(1, count)]
            while len(delivered) < count:
                event = subscriber.receive(timeout=10)
                assert event is not None, f"stuck after seq {delivered[-1]['seq']}"
                delivered.append(event)
            assert subscriber.receive(timeout=0.5) is None
        assert subscriber.replayed > 1, "nothing was dropped: this test did not make the subscriber lag"
        assert subscriber.missed == []
        assert delivered == published == read_journal(publisher.journal.path)


def test_a_journal_that_is_not_a_regular_file_is_refused(tmp_path):
    """/dev/full reads as endless zeros: scanning it for the last seq would never end."""
    with pytest.raises(MerError, match="/dev/full: the event journal must be a regular file"):
        EventPublisher(ANY_PORT, None, "/dev/full")
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(MerError, match="folder.jsonl: cannot open the event journal: Is a directory"):
        EventPublisher(ANY_PORT, None, tmp_path / "folder.jsonl")


# -- the metrics port ------------------------------------------------------------------------


def taken_port() -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_metrics_port_in_use_stops_mer_stream_before_it_starts(tmp_path, capsys, one_torch_thread):
    """No fallback port: Prometheus scrapes the configured one; the error says how to choose."""
    journal = tmp_path / "run" / "events.jsonl"
    events = free_port()
    with taken_port() as metrics:
        port = metrics.getsockname()[1]
        status = mer_main(["-q", "stream", "--source", str(tmp_path / "no-such-video.mp4"), "--metrics-port",
                           str(port), "--endpoint", f"tcp://127.0.0.1:{events}", "--journal", str(journal)])
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"mer stream: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use (choose another "
        "--metrics-port or [metrics] port, 0 for any free one, or --no-metrics)"]
    assert not journal.parent.exists() and port_is_free(events)


def test_a_refusal_after_the_metrics_endpoint_is_up_closes_it(tmp_path, capsys, one_torch_thread):
    journal = tmp_path / "run" / "events.jsonl"
    metrics = free_port()
    with taken_port() as events:
        endpoint = f"tcp://127.0.0.1:{events.getsockname()[1]}"
        status = mer_main(["-q", "stream", "--source", str(tmp_path / "no-such-video.mp4"), "--metrics-port",
                           str(metrics), "--endpoint", endpoint, "--journal", str(journal)])
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"mer stream: error: cannot bind {endpoint}: Address already in use"]
    assert port_is_free(metrics)  # the metrics server that was already up is closed again
    assert not journal.parent.exists()


# -- a journal that cannot grow --------------------------------------------------------------

# Publishes 3 events, makes the journal unable to grow (a file-size limit, or a filler that
# takes a tmpfs's last page), publishes 20, gives the room back, publishes 3; prints what happened.
JOURNAL_FULL_CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
from streamer.journal import read_journal
from streamer.metrics import StreamMetrics
from streamer.publisher import EventPublisher
from tests.test_events import draft

mode, folder = sys.argv[1], Path(sys.argv[2])
journal = folder / "events.jsonl"
metrics = StreamMetrics("cam0")
publisher = EventPublisher("tcp://127.0.0.1:*", None, journal, on_drop=metrics.event_dropped)
publish = lambda: publisher.publish(draft(captured_at=time.monotonic()))
before = [publish() for _ in range(3)]
if mode == "rlimit":
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (journal.stat().st_size + 100, limit[1]))
else:
    filler = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(filler, bytes(4096))
    except OSError as exc:
        assert exc.strerror == "No space left on device", exc
    os.close(filler)
full = [publish() for _ in range(20)]
if mode == "rlimit":
    resource.setrlimit(resource.RLIMIT_FSIZE, limit)
else:
    os.unlink(folder / "filler")
after = [publish() for _ in range(3)]
print(json.dumps({
    "before": before, "full": full, "after": after, "dropped": publisher.dropped,
    "error": str(publisher.last_drop),
    "metric": metrics.registry.get_sample_value("mer_events_dropped_total",
                                                {"stream": "cam0", "reason": "journal_full"}),
    "journal": read_journal(journal), "ends_with_newline": journal.read_bytes().endswith(b"\n"),
}))
publisher.close()
"""


def can_mount_a_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.parametrize("mode", ["rlimit", "tmpfs"])
def test_a_full_journal_drops_and_counts_events_then_resumes(mode, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", JOURNAL_FULL_CHILD, mode, str(tmp_path)]
    if mode == "tmpfs":
        if not can_mount_a_tmpfs():
            pytest.skip("cannot mount a tmpfs here (needs unshare and the right to mount)")
        script = 'mount -t tmpfs -o size=8k tmpfs "$1" && shift && exec "$@"'  # 8 KiB: two pages
        command = ["unshare", "-m", "sh", "-c", script, "sh", str(tmp_path), *command]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    journaled_while_full = [event for event in report["full"] if event is not None]
    dropped = report["full"].count(None)
    assert dropped >= 1, "the journal never filled up"
    if mode == "rlimit":
        assert journaled_while_full == []  # the very next event crossed the limit
        assert report["error"] == f"{tmp_path / 'events.jsonl'}: cannot journal event seq 4: File too large"
    else:
        assert report["error"].endswith("No space left on device")
    assert report["dropped"] == {"journal_full": dropped} and report["metric"] == dropped
    # Nothing torn, nothing published that is not journaled, seq without holes, resumed after.
    published = report["before"] + journaled_while_full + report["after"]
    assert report["ends_with_newline"] and report["journal"] == published
    assert [event["seq"] for event in published] == list(range(1, len(published) + 1))
    assert len(report["after"]) == 3


@pytest.fixture(scope="module")
def video_with_events(tmp_path_factory) -> Path:
    folder = synth_long(tmp_path_factory.mktemp("video"), duration=4, micro=2, macro=0, seed=5)
    return next(folder.glob("*.mp4"))


def test_mer_stream_keeps_running_on_a_full_disk_and_says_what_it_lost(video_with_events, tmp_path):
    """A real ``mer stream`` whose journal may not grow: every frame is still processed, every
    recognised event is counted as not published, the journal is left as it was, and the
    exit status and last line say how many events were lost and why."""
    journal = tmp_path / "events.jsonl"
    with EventJournal(journal) as earlier:  # a journal from an earlier run: seq goes on from 2
        for seq in (1, 2):
            earlier.append(complete_event(now_draft(), seq=seq))
    before = journal.read_bytes()

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 50, resource.RLIM_INFINITY))

    result = subprocess.run([sys.executable, "-m", "streamer.cli", "-q", "stream", "--source", str(video_with_events),
                             "--stream-id", "cam0", "--endpoint", ANY_PORT, "--replay-endpoint", ANY_PORT,
                             "--journal", str(journal), "--no-metrics"],
                            cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    summary, lost = result.stdout.strip().splitlines()
    recognised = int(summary.split(" frames, ")[1].split(" events")[0])
    assert summary == f"stream cam0: 120 frames, {recognised} events (last seq 2), dropped {{}} of 120 read"
    assert recognised >= 1 and lost == f"stream cam0: events not published {{'journal_full': {recognised}}}"
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"mer stream: error: {recognised} events were recognised but not published: "
        f"{journal}: cannot journal event seq 3: File too large")
    assert journal.read_bytes() == before
