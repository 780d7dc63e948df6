"""Publishing over real ZeroMQ sockets: ordering, replay, gaps, restart after SIGKILL, CURVE.

Publishers and subscribers bind/connect on loopback with ephemeral ports
(``tcp://127.0.0.1:*``) or on ``inproc://`` where a test needs ZeroMQ's drop behaviour
to be deterministic. The slow-joiner problem is not waited out: subscribers start
with ``from_seq`` and repair losses from the journal, which is the behaviour tested.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from engines.errors import MerError
from streamer.cli import main as mer_main
from streamer.event_transport import CurveClientKeys, CurveServerKeys, HandshakeError, is_loopback, replay_endpoint_for
from streamer.events import EventSchemaError
from streamer.journal import read_journal
from streamer.publisher import EventPublisher
from streamer.subscriber import EventSubscriber
from tests.test_events import draft

REPO = Path(__file__).resolve().parents[1]
ANY_PORT = "tcp://127.0.0.1:*"

# A publisher process: prints its endpoints, then publishes one event per stdin line
# and prints it; at end of input it closes cleanly.
PUBLISHER_PROCESS = """
import json, sys, time
from streamer.publisher import EventPublisher
from tests.test_events import draft
publisher = EventPublisher(sys.argv[1], sys.argv[2], sys.argv[3])
print(json.dumps([publisher.endpoint, publisher.replay_endpoint]), flush=True)
for line in sys.stdin:
    event = publisher.publish(draft(face=int(line), captured_at=time.monotonic()))
    print(json.dumps(event), flush=True)
publisher.close()
"""


def start_publisher_process(endpoint, replay_endpoint, journal):
    process = subprocess.Popen([sys.executable, "-c", PUBLISHER_PROCESS, endpoint, replay_endpoint, str(journal)],
                               cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    endpoints = json.loads(process.stdout.readline())
    return process, endpoints


def publish_in(process, face):
    process.stdin.write(f"{face}\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())


def receive_all(subscriber, count, timeout=15.0):
    events = []
    for _ in range(count):
        event = subscriber.receive(timeout=timeout)
        assert event is not None, f"timed out after {[e['seq'] for e in events]}"
        events.append(event)
    return events


def now_draft(face=0, **overrides):
    return draft(face=face, captured_at=time.monotonic(), **overrides)


@pytest.fixture
def publisher(tmp_path):
    with EventPublisher(ANY_PORT, ANY_PORT, tmp_path / "journal.jsonl") as publisher:
        yield publisher


def test_mer_subscribe_in_another_process_receives_every_event_in_order(publisher):
    published = [publisher.publish(now_draft(face)) for face in range(3)]
    command = [sys.executable, "-m", "streamer.cli", "-q", "subscribe", "--endpoint", publisher.endpoint,
               "--replay-endpoint", publisher.replay_endpoint, "--from-seq", "1", "--count", "8", "--timeout", "20"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        lines = [process.stdout.readline() for _ in range(3)]  # the replayed history
        published += [publisher.publish(now_draft(face)) for face in range(3, 8)]  # live, or repaired if lost
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    received = [json.loads(line) for line in lines + out.splitlines()]
    assert [event["seq"] for event in received] == list(range(1, 9))
    assert received == published


def test_event_is_on_disk_before_it_is_on_the_wire(publisher):
    with EventSubscriber(publisher.endpoint, publisher.replay_endpoint, from_seq=1) as subscriber:
        published = publisher.publish(now_draft())
        assert read_journal(publisher.journal.path) == [published]  # as soon as publish returns
        for face in range(1, 4):
            publisher.publish(now_draft(face))
            event = subscriber.receive(timeout=10)
            assert event in read_journal(publisher.journal.path)  # when it arrives, it is journaled
        receive_all(subscriber, 1)
        assert subscriber.next_seq == 5


def test_invalid_event_is_neither_journaled_nor_sent_and_uses_no_seq(publisher):
    with pytest.raises(EventSchemaError, match="'kind'"):
        publisher.publish({**now_draft(), "kind": "nano"})
    assert publisher.last_seq == 0
    assert read_journal(publisher.journal.path) == []
    assert publisher.publish(now_draft())["seq"] == 1


def test_gap_from_a_full_queue_is_replayed_from_the_journal(tmp_path):
    context = zmq.Context()
    # inproc has no kernel buffers: with tiny high-water marks ZeroMQ drops messages deterministically.
    publisher = EventPublisher("inproc://events", "inproc://replay", tmp_path / "journal.jsonl", context=context,
                               send_hwm=1)
    subscriber = EventSubscriber("inproc://events", "inproc://replay", from_seq=1, context=context,
                                 catch_up_interval_s=None, receive_hwm=1)
    try:
        publisher.publish(now_draft())
        delivered = receive_all(subscriber, 1)
        for face in range(2, 42):  # a burst the subscriber does not read: most are dropped
            publisher.publish(now_draft(face))
        while (event := subscriber.receive(timeout=0.2)) is not None:  # the few that were queued
            delivered.append(event)
        assert subscriber.gaps == []
        queued = len(delivered)
        assert queued < 10
        publisher.publish(now_draft(42))  # arrives live and reveals the gap
        delivered += receive_all(subscriber, 42 - queued)
        assert [event["seq"] for event in delivered] == list(range(1, 43))
        assert subscriber.gaps == [(queued + 1, 41)]
        assert subscriber.missed == []
        assert delivered == read_journal(publisher.journal.path)
        assert subscriber.receive(timeout=0.2) is None  # nothing twice
    finally:
        subscriber.close()
        publisher.close()
        context.term()


def test_lost_tail_is_caught_up_without_a_later_event(tmp_path):
    context = zmq.Context()
    publisher = EventPublisher("inproc://events", "inproc://replay", tmp_path / "journal.jsonl", context=context,
                               send_hwm=1)
    subscriber = EventSubscriber("inproc://events", "inproc://replay", from_seq=1, context=context,
                                 catch_up_interval_s=0.1, receive_hwm=1)
    try:
        for face in range(30):
            publisher.publish(now_draft(face))
        assert [event["seq"] for event in receive_all(subscriber, 30)] == list(range(1, 31))
    finally:
        subscriber.close()
        publisher.close()
        context.term()


def test_publisher_killed_and_restarted_continues_seq_and_replays(tmp_path):
    journal = tmp_path / "journal.jsonl"
    first, (endpoint, replay_endpoint) = start_publisher_process(ANY_PORT, ANY_PORT, journal)
    second = None
    try:
        with EventSubscriber(endpoint, replay_endpoint, from_seq=1, replay_timeout_s=1.0) as subscriber:
            before = [publish_in(first, face) for face in range(3)]
            assert [event["seq"] for event in before] == [1, 2, 3]
            assert receive_all(subscriber, 3) == before

            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
            assert read_journal(journal) == before

            second, endpoints = start_publisher_process(endpoint, replay_endpoint, journal)
            assert endpoints == [endpoint, replay_endpoint]
            # Published the moment the new publisher is up: the subscriber is still reconnecting.
            after = [publish_in(second, face) for face in (3, 4)]
            assert [event["seq"] for event in after] == [4, 5]
            assert receive_all(subscriber, 2) == after

            # A subscriber that was away since event 1 gets the rest from the restarted publisher's journal.
            with EventSubscriber(endpoint, replay_endpoint, from_seq=2) as returning:
                assert receive_all(returning, 4) == before[1:] + after
                last = publish_in(second, 5)
                assert last["seq"] == 6
                assert receive_all(returning, 1) == [last]
                assert returning.receive(timeout=0.3) is None
            assert receive_all(subscriber, 1) == [last]
            assert subscriber.receive(timeout=0.3) is None
        second.stdin.close()  # end of input: the publisher closes cleanly
        assert second.wait(timeout=10) == 0
        assert read_journal(journal) == before + after + [last]
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def test_replay_protocol(tmp_path):
    with EventPublisher(ANY_PORT, ANY_PORT, tmp_path / "journal.jsonl", replay_batch=2) as publisher:
        published = [publisher.publish(now_draft(face)) for face in range(5)]
        context = zmq.Context.instance()
        with context.socket(zmq.REQ) as request:
            request.rcvtimeo = 5000
            request.linger = 0
            request.connect(publisher.replay_endpoint)

            def ask(message):
                request.send(message)
                return json.loads(request.recv())

            assert ask(b'{"from_seq": 1}') == {"events": published[:2], "last_seq": 5, "more": True}
            assert ask(b'{"from_seq": 4}') == {"events": published[3:], "last_seq": 5, "more": False}
            assert ask(b'{"from_seq": 2, "to_seq": 3}') == {"events": published[1:3], "last_seq": 5, "more": False}
            assert ask(b'{"from_seq": 6}') == {"events": [], "last_seq": 5, "more": False}
            for bad in (b"nope", b'{"from_seq": 0}', b'{"from_seq": 1, "to_seq": "3"}', b"[1]"):
                assert "from_seq" in ask(bad)["error"]
        with EventSubscriber(publisher.endpoint, publisher.replay_endpoint, from_seq=2) as subscriber:
            assert receive_all(subscriber, 4) == published[1:]  # three batches
            assert subscriber.replayed == 4


def test_stream_filter(tmp_path):
    with EventPublisher(ANY_PORT, ANY_PORT, tmp_path / "journal.jsonl") as publisher:
        published = [publisher.publish(now_draft(stream=stream)) for stream in ("cam1", "cam10", "cam1", "cam2")]
        with EventSubscriber(publisher.endpoint, publisher.replay_endpoint, from_seq=1, stream="cam1") as subscriber:
            assert receive_all(subscriber, 2) == [published[0], published[2]]
            assert subscriber.receive(timeout=0.3) is None
            assert subscriber.next_seq == 5


def test_second_publisher_on_the_same_endpoint_or_journal_fails_clearly(publisher, tmp_path):
    with pytest.raises(MerError, match=f"cannot bind {publisher.endpoint}"):
        EventPublisher(publisher.endpoint, None, tmp_path / "other.jsonl")
    with pytest.raises(MerError, match="in use by another publisher"):
        EventPublisher(ANY_PORT, None, publisher.journal.path)


def test_endpoint_helpers():
    assert replay_endpoint_for("tcp://127.0.0.1:5556") == "tcp://127.0.0.1:5557"
    assert replay_endpoint_for("tcp://[::1]:7000") == "tcp://[::1]:7001"
    with pytest.raises(MerError, match="give the replay endpoint explicitly"):
        replay_endpoint_for("ipc:///tmp/mer")
    assert is_loopback("tcp://127.0.0.1:5556") and is_loopback("tcp://localhost:1") and is_loopback("tcp://[::1]:1")
    assert is_loopback("inproc://x") and is_loopback(ANY_PORT)
    assert not is_loopback("tcp://0.0.0.0:5556") and not is_loopback("tcp://eth0:5556")
    assert not is_loopback("tcp://192.168.1.5:5556")


def test_subscribe_command_rejects_bad_arguments(capsys):
    assert mer_main(["subscribe", "--from-seq", "0"]) == 2
    assert "--from-seq must be 1 or more, got 0" in capsys.readouterr().err
    assert mer_main(["subscribe", "--curve-secret-key", "a.key_secret"]) == 2
    assert "CURVE needs both" in capsys.readouterr().err


@pytest.mark.skipif(not zmq.has("curve"), reason="this libzmq has no CURVE (libsodium)")
def test_curve_encrypts_and_admits_only_authorized_clients(tmp_path):
    def certificate(folder, name):
        public, secret = zmq.auth.create_certificates(tmp_path / folder, name)
        return Path(public), Path(secret)

    for folder in ("server", "client", "intruder", "authorized"):
        (tmp_path / folder).mkdir()
    server_public, server_secret = certificate("server", "server")
    client_public, client_secret = certificate("client", "client")
    _, intruder_secret = certificate("intruder", "intruder")
    os.link(client_public, tmp_path / "authorized" / "client.key")

    keys = CurveServerKeys(server_secret, authorized_clients=tmp_path / "authorized")
    with EventPublisher(ANY_PORT, ANY_PORT, tmp_path / "journal.jsonl", curve=keys) as publisher:
        published = [publisher.publish(now_draft(face)) for face in range(2)]
        with EventSubscriber(publisher.endpoint, publisher.replay_endpoint, from_seq=1,
                             curve=CurveClientKeys(client_secret, server_public)) as client:
            assert receive_all(client, 2) == published
            published.append(publisher.publish(now_draft(2)))
            assert receive_all(client, 1) == published[2:]
        outsiders = ((CurveClientKeys(intruder_secret, server_public), "refused this subscriber's CURVE key"),
                     (None, "requires? CURVE"))  # refused, or (busy machine) its handshakes dropped
        for curve, reason in outsiders:  # nothing delivered, and told why
            with EventSubscriber(publisher.endpoint, publisher.replay_endpoint, from_seq=1, curve=curve,
                                 replay_timeout_s=0.5) as outsider:
                with pytest.raises(HandshakeError, match=reason):
                    outsider.receive(timeout=10)
    with pytest.raises(MerError, match="no secret key"):
        CurveClientKeys(server_public, server_public)
