"""Events beyond this host: CURVE keys made by ``mer keys`` let in only authorised subscribers,
clear text is refused where other hosts can connect, and every default binds loopback.

Everything is real: ZeroMQ sockets on loopback (and, for the exposure checks, briefly on
all interfaces), ``mer stream`` and ``mer subscribe`` processes, and the addresses sockets
really listen on are read from the kernel (``/proc/net/tcp``), not from our own code.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from prometheus_client import CollectorRegistry

from engines.errors import ConfigError, InputError
from streamer.cli import build_parser
from streamer.cli import main as mer_main
from streamer.event_transport import (
    DEFAULT_ENDPOINT,
    DEFAULT_REPLAY_ENDPOINT,
    CurveClientKeys,
    CurveServerKeys,
    HandshakeError,
    check_exposure,
)
from streamer.journal import read_journal
from streamer.metrics import serve_metrics
from streamer.publisher import TOPIC_PREFIX, EventPublisher
from streamer.stream_config import StreamConfig, load_stream_config
from streamer.subscriber import EventSubscriber
from tests.streaming_fixtures import free_port, mer_popen, synth_long
from tests.test_publisher import now_draft, receive_all

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="this libzmq has no CURVE (libsodium)")

ANY_PORT = "tcp://127.0.0.1:*"


@dataclass(frozen=True)
class KeyRing:
    """Certificates made by ``mer keys``: a server, an authorised client (alice), an outsider (mallory)."""

    root: Path

    @property
    def server(self) -> CurveServerKeys:
        return CurveServerKeys(self.server_secret, self.authorized)

    server_public = property(lambda self: self.root / "server/server.key")
    server_secret = property(lambda self: self.root / "server/server.key_secret")
    authorized = property(lambda self: self.root / "server/authorized_clients")

    def client(self, name: str, server_public: Path | None = None) -> CurveClientKeys:
        return CurveClientKeys(self.root / f"{name}/{name}.key_secret", server_public or self.server_public)


@pytest.fixture(scope="module")
def key_ring(tmp_path_factory) -> KeyRing:
    ring = KeyRing(tmp_path_factory.mktemp("keys"))
    assert mer_main(["-q", "keys", "server", str(ring.root / "server")]) == 0
    assert mer_main(["-q", "keys", "client", str(ring.root / "alice"), "--name", "alice",
                     "--authorize", str(ring.authorized)]) == 0
    assert mer_main(["-q", "keys", "client", str(ring.root / "mallory"), "--name", "mallory"]) == 0
    return ring


def listening_hosts(port: int) -> set[str]:
    """The local addresses the kernel has a TCP socket listening on ``port`` at (Linux)."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A = LISTEN
                continue
            words = [bytes.fromhex(address[i:i + 8]) for i in range(0, len(address), 8)]  # 32-bit host-order words
            raw = b"".join(word[::-1] if sys.byteorder == "little" else word for word in words)
            hosts.add(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw))
    return hosts


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


needs_proc_net = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")


# --- keys from `mer keys` on a real stream -------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_video(tmp_path_factory) -> Path:
    folder = synth_long(tmp_path_factory.mktemp("video"), duration=6, micro=2, macro=0, seed=5)
    return next(folder.glob("*.mp4"))


@pytest.mark.slow
@needs_proc_net
def test_mer_stream_with_mer_keys_delivers_every_event_to_the_authorized_subscriber(key_ring, short_video, tmp_path):
    endpoint, replay, metrics_port = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", free_port()
    journal = tmp_path / "events.jsonl"
    subscriber = mer_popen("subscribe", "--endpoint", endpoint, "--replay-endpoint", replay, "--from-seq", "1",
                           "--timeout", "150", "--curve-secret-key", str(key_ring.root / "alice/alice.key_secret"),
                           "--curve-server-key", str(key_ring.server_public),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Its first replay request goes unanswered and it says it will retry: it is up before the stream.
    while "; retrying" not in (line := subscriber.stderr.readline()):
        assert line, f"mer subscribe exited: {subscriber.communicate()}"
    stream = mer_popen("stream", "--source", str(short_video), "--stream-id", "door", "--endpoint", endpoint,
                       "--replay-endpoint", replay, "--journal", str(journal), "--metrics-port", str(metrics_port),
                       "--curve-secret-key", str(key_ring.server_secret),
                       "--curve-authorized-clients", str(key_ring.authorized),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        metrics_hosts: set[str] = set()
        while stream.poll() is None and not metrics_hosts:  # the metrics server listens from start to end
            metrics_hosts = listening_hosts(metrics_port)
            time.sleep(0.05)
        out, err = stream.communicate(timeout=120)
        assert stream.returncode == 0, err
        journaled = read_journal(journal)
        assert journaled, f"the stream published no event:\n{err}"
        # Live or replayed, each once; a subscriber that fails exits (at worst after its --timeout,
        # which only a failure reaches: it is killed as soon as it has printed them all).
        lines = [subscriber.stdout.readline() for _ in journaled]
        assert all(lines), f"mer subscribe stopped early:\n{subscriber.communicate()[1]}"
        received = [json.loads(line) for line in lines]
    finally:
        for process in (stream, subscriber):
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert received == journaled
    assert {event["stream"] for event in received} == {"door"}
    assert metrics_hosts == {"127.0.0.1"}  # the profile's default metrics host, as the kernel sees it
    assert "reachable from other hosts" not in err


# --- who receives what ---------------------------------------------------------------------------------------


def test_only_the_authorized_key_receives_and_the_publisher_never_waits(key_ring, tmp_path, capsys):
    with EventPublisher(ANY_PORT, ANY_PORT, tmp_path / "journal.jsonl", curve=key_ring.server) as publisher:
        first = publisher.publish(now_draft(0))
        outsiders = {
            "unauthorised key": (key_ring.client("mallory"),
                                 re.escape("the publisher refused this subscriber's CURVE key (it is not among its "
                                           "authorized clients)")),
            "wrong server key": (key_ring.client("alice", key_ring.root / "mallory/mallory.key"),
                                 re.escape("the publisher dropped 5 handshakes in a row: is --curve-server-key its "
                                           "public key, and does it use CURVE?")),
            # The mismatch is reported, unless the publisher hangs up first (on a busy machine): then
            # the handshakes are merely dropped, and the message says what to check.
            "no key": (None, re.escape("the publisher requires CURVE: give --curve-secret-key and --curve-server-key")
                       + "|" + re.escape("the publisher dropped 5 handshakes in a row: does it require CURVE")),
        }
        for name, (curve, message) in outsiders.items():
            with EventSubscriber(publisher.endpoint, publisher.replay_endpoint, from_seq=1, curve=curve,
                                 replay_timeout_s=0.5) as outsider:
                with pytest.raises(HandshakeError, match=f"^{re.escape(publisher.endpoint)}: ({message})"):
                    outsider.receive(timeout=10)
                assert outsider.next_seq == 1, name  # nothing was delivered

        # `mer subscribe` with the outsider's key: a one-line reason, no output, exit status 2.
        assert mer_main(["-q", "subscribe", "--endpoint", publisher.endpoint, "--replay-endpoint",
                         publisher.replay_endpoint, "--count", "1", "--timeout", "10",
                         "--curve-secret-key", str(key_ring.root / "mallory/mallory.key_secret"),
                         "--curve-server-key", str(key_ring.server_public)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith(f"mer subscribe: error: {publisher.endpoint}: the publisher refused")

        context = zmq.Context()
        intruder = context.socket(zmq.SUB)  # a plain ZeroMQ client, as an attacker would use
        intruder.subscribe(TOPIC_PREFIX.encode())
        intruder.connect(publisher.endpoint)
        with EventSubscriber(publisher.endpoint, publisher.replay_endpoint, from_seq=1,
                             curve=key_ring.client("alice")) as alice:
            assert receive_all(alice, 1) == [first]
            published: list[dict] = []
            burst = threading.Thread(target=lambda: published.extend(publisher.publish(now_draft(face))
                                                                     for face in range(1, 201)))
            burst.start()
            burst.join(timeout=60)
            assert not burst.is_alive(), "publish blocked"
            assert receive_all(alice, 200) == published
        assert intruder.poll(1000) == 0  # not one message, not even the topic
        intruder.close(linger=0)
        context.term()
        assert read_journal(publisher.journal.path) == [first, *published]


def test_authorizing_and_revoking_a_key_needs_no_restart(key_ring, tmp_path, capsys):
    clients = tmp_path / "clients"
    clients.mkdir()
    keys = CurveServerKeys(key_ring.server_secret, clients)
    with EventPublisher(ANY_PORT, ANY_PORT, tmp_path / "journal.jsonl", curve=keys) as publisher:
        event = publisher.publish(now_draft())

        def mallory_receives() -> bool:
            with EventSubscriber(publisher.endpoint, publisher.replay_endpoint, from_seq=1,
                                 curve=key_ring.client("mallory")) as mallory:
                try:
                    return mallory.receive(timeout=10) == event
                except HandshakeError:
                    return False

        assert not mallory_receives()
        assert mer_main(["-q", "keys", "authorize", str(key_ring.root / "mallory/mallory.key"), str(clients)]) == 0
        assert capsys.readouterr().out == f"authorized: {clients / 'mallory.key'}\n"
        assert mallory_receives()
        (clients / "mallory.key").unlink()
        assert not mallory_receives()


def test_curve_keys_against_a_clear_text_publisher_are_an_error(key_ring, tmp_path):
    with EventPublisher(ANY_PORT, ANY_PORT, tmp_path / "journal.jsonl") as publisher:
        publisher.publish(now_draft())
        with EventSubscriber(publisher.endpoint, publisher.replay_endpoint, from_seq=1,
                             curve=key_ring.client("alice")) as alice:
            reasons = ("the publisher does not use CURVE; connect without CURVE keys",
                       "the publisher dropped 5 handshakes in a row: is --curve-server-key its public key, and does "
                       "it use CURVE?")  # as above: the mismatch is reported unless the publisher hangs up first
            with pytest.raises(HandshakeError, match="|".join(map(re.escape, reasons))):
                alice.receive(timeout=10)


def test_key_files_are_checked_before_anything_starts(key_ring, tmp_path, caplog):
    with pytest.raises(InputError, match="server.key: the server certificate has no secret key"):
        CurveServerKeys(key_ring.server_public)
    with pytest.raises(InputError, match="missing.key_secret: cannot read the client CURVE certificate"):
        CurveClientKeys(tmp_path / "missing.key_secret", key_ring.server_public)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "eve.key").write_text("not a certificate\n")
    with pytest.raises(InputError, match="eve.key: cannot read the authorized client CURVE certificate"):
        CurveServerKeys(key_ring.server_secret, broken)
    with pytest.raises(InputError, match="authorized clients must be a folder"):
        CurveServerKeys(key_ring.server_secret, key_ring.server_public)

    shared = tmp_path / "shared.key_secret"
    shutil.copyfile(key_ring.root / "alice/alice.key_secret", shared)
    shared.chmod(0o644)
    with caplog.at_level("WARNING", logger="streamer.event_transport"):
        CurveClientKeys(shared, key_ring.server_public)
    assert f"{shared} holds a secret key but other users may read it; chmod 600 it" in caplog.messages


# --- clear text only on loopback -----------------------------------------------------------------------------


def test_exposure_rule():
    check_exposure("tcp://127.0.0.1:5556", None, insecure=False)
    check_exposure("ipc:///run/mer/events", None, insecure=False)
    for exposed in ("tcp://0.0.0.0:5556", "tcp://*:5556", "tcp://192.0.2.10:5556", "tcp://eth0:5556"):
        with pytest.raises(InputError, match=f"^{re.escape(exposed)} is reachable from other hosts: secure it with CURVE"):
            check_exposure(exposed, None, insecure=False)


@needs_proc_net
def test_publisher_refuses_clear_text_beyond_loopback_unless_insecure(key_ring, tmp_path, caplog):
    for endpoint, replay in (("tcp://0.0.0.0:*", None), (ANY_PORT, "tcp://0.0.0.0:*")):
        with pytest.raises(InputError, match="tcp://0.0.0.0:\\* is reachable from other hosts"):
            EventPublisher(endpoint, replay, tmp_path / "refused.jsonl")
    assert not (tmp_path / "refused.jsonl").exists()

    with caplog.at_level("WARNING", logger="streamer.event_transport"):
        with EventPublisher("tcp://0.0.0.0:*", None, tmp_path / "insecure.jsonl", insecure=True) as publisher:
            assert listening_hosts(port_of(publisher.endpoint)) == {"0.0.0.0"}  # what the loopback checks rule out
    assert "tcp://0.0.0.0:* is reachable from other hosts but not encrypted (insecure mode)" in caplog.text

    caplog.clear()
    with EventPublisher("tcp://0.0.0.0:*", None, tmp_path / "curve.jsonl", curve=key_ring.server) as publisher:
        event = publisher.publish(now_draft())
        loopback = publisher.endpoint.replace("0.0.0.0", "127.0.0.1")
        with EventSubscriber(loopback, None, curve=key_ring.client("alice")) as alice:
            published = []
            while (received := alice.receive(timeout=0.2)) is None:  # PUB/SUB: live only, the first may be missed
                published.append(publisher.publish(now_draft(len(published) + 1)))
            assert received in published and received != event
    assert "not encrypted" not in caplog.text


def test_mer_stream_refuses_clear_text_beyond_loopback_before_loading_anything(tmp_path, capsys):
    assert mer_main(["stream", "--source", str(tmp_path / "not-opened.mp4"), "--endpoint", "tcp://0.0.0.0:5556"]) == 2
    assert capsys.readouterr().err.startswith("mer stream: error: tcp://0.0.0.0:5556 is reachable from other hosts")

    profile = tmp_path / "lan.toml"
    profile.write_text('[events]\nendpoint = "tcp://192.0.2.10:5556"\nreplay_endpoint = "tcp://192.0.2.10:5557"\n')
    assert mer_main(["stream", "--source", "0", "--config", str(profile)]) == 2
    assert "tcp://192.0.2.10:5556 is reachable from other hosts" in capsys.readouterr().err

    profile.write_text('[events]\ncurve_authorized_clients = "keys/authorized_clients"\n')
    with pytest.raises(ConfigError, match="curve_authorized_clients needs curve_secret_key"):
        load_stream_config(profile)


# --- loopback by default -------------------------------------------------------------------------------------


def test_every_default_is_loopback():
    for config in (StreamConfig(), load_stream_config()):  # the schema's and the shipped profile's
        assert config.events.endpoint == DEFAULT_ENDPOINT == "tcp://127.0.0.1:5556"
        assert config.events.replay_endpoint == DEFAULT_REPLAY_ENDPOINT == "tcp://127.0.0.1:5557"
        assert config.metrics.host == "127.0.0.1"
        assert config.events.insecure is False and config.events.curve_secret_key is None
    parser = build_parser()
    stream = parser.parse_args(["stream", "--source", "0"])
    assert (stream.endpoint, stream.replay_endpoint, stream.insecure) == (None, None, False)  # the profile decides
    assert parser.parse_args(["subscribe"]).endpoint == "tcp://127.0.0.1:5556"
    assert serve_metrics.__defaults__ == ("127.0.0.1", 9108)
    assert EventSubscriber.__init__.__defaults__[:2] == (DEFAULT_ENDPOINT, DEFAULT_REPLAY_ENDPOINT)


@needs_proc_net
def test_default_hosts_are_what_the_kernel_listens_on(tmp_path):
    config = StreamConfig()
    any_port = [endpoint.rsplit(":", 1)[0] + ":*" for endpoint in (config.events.endpoint, config.events.replay_endpoint)]
    with EventPublisher(*any_port, tmp_path / "journal.jsonl") as publisher:
        for endpoint in (publisher.endpoint, publisher.replay_endpoint):
            assert listening_hosts(port_of(endpoint)) == {"127.0.0.1"}
    server = serve_metrics(CollectorRegistry(), config.metrics.host, 0)
    try:
        assert listening_hosts(server.port) == {"127.0.0.1"}
    finally:
        server.close()
