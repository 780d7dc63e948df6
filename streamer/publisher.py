"""Publishes ``mer.event/1`` events on a ZeroMQ PUB socket, journaled first, with a replay server.

PUB/SUB is fire-and-forget: a subscriber that is not connected yet (ZeroMQ's "slow
joiner"), reconnecting, or too slow (its queue is full) silently misses messages.
So every event gets a ``seq`` one above the last, is appended to the journal and
fsync-ed, and only then sent; a REP socket answers replay requests from the journal:

    request  {"from_seq": N, "to_seq": M}            (to_seq optional, inclusive)
    reply    {"events": [...], "last_seq": L, "more": bool}   or   {"error": "..."}

A reply holds at most ``REPLAY_BATCH`` events (by default); ``more`` says to ask again from the
next seq. The journal also carries ``seq`` across restarts. docs/events.md has more.

``publish`` never waits for subscribers (a PUB socket drops, per subscriber, what does not fit
its queue; the journal has it). An event the journal cannot take (a full disk) is not sent
either, so the wire never carries an event that replay and restarts do not know: it is
counted in ``dropped`` by reason, reported to ``on_drop`` and logged, its ``seq`` is given to
the next event, and publishing goes on, journaled again as soon as the disk has room.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Mapping

import zmq

from engines.errors import MerError
from streamer.event_transport import (
    DEFAULT_ENDPOINT,
    DEFAULT_REPLAY_ENDPOINT,
    CurveServerKeys,
    check_exposure,
    require_curve_support,
)
from streamer.events import complete_event, is_integer
from streamer.journal import EventJournal, JournalWriteError

__all__ = ["DEFAULT_ENDPOINT", "DEFAULT_REPLAY_ENDPOINT", "REPLAY_BATCH", "EventPublisher", "topic_for"]

log = logging.getLogger(__name__)

REPLAY_BATCH = 500
TOPIC_PREFIX = "mer.event."
_POLL_MS = 100  # how often the replay thread looks at its stop flag


def topic_for(stream_id: str) -> bytes:
    """The ZeroMQ topic frame of a stream's events."""
    return (TOPIC_PREFIX + stream_id).encode("utf-8")


class EventPublisher:
    """Journals and publishes events; serves replays of the journal.

    ``endpoint`` and ``replay_endpoint`` are bound (``tcp://127.0.0.1:*`` picks a free
    port; the attributes of the same names then hold the bound addresses);
    ``replay_endpoint=None`` disables replay. ``curve`` makes both sockets CURVE servers; an
    endpoint other hosts can reach is refused without it unless ``insecure=True``.
    ``send_hwm`` is how many messages a slow subscriber may have queued before ZeroMQ
    drops its messages (it can replay them); ``replay_batch`` caps the events per replay
    reply. ``on_drop(reason)`` is called for each event that could not be journaled (and so
    was not sent). ``publish`` may be called from any thread.
    """

    def __init__(
        self,
        endpoint: str,
        replay_endpoint: str | None,
        journal_path: str | Path,
        *,
        curve: CurveServerKeys | None = None,
        insecure: bool = False,
        context: zmq.Context | None = None,
        send_hwm: int = 1000,
        linger_s: float = 1.0,
        replay_batch: int = REPLAY_BATCH,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.journal: EventJournal | None = None
        self.replay_batch = replay_batch
        self.on_drop = on_drop
        self.dropped: Counter[str] = Counter()  # events not published, by reason
        self.last_drop: JournalWriteError | None = None
        self._owns_context = context is None
        self.context = zmq.Context() if context is None else context
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._authenticator = None
        self._replay_thread: threading.Thread | None = None
        self._pub: zmq.Socket | None = None
        self._rep: zmq.Socket | None = None
        try:
            for exposed in (endpoint, replay_endpoint):
                if exposed is not None:
                    check_exposure(exposed, curve, insecure=insecure)
            if curve is not None:
                require_curve_support()
                self._authenticator = curve.start_authenticator(self.context)
            self._pub = self._bind(zmq.PUB, endpoint, curve, linger_s, sndhwm=send_hwm)
            self.endpoint = self._pub.last_endpoint.decode()
            self.replay_endpoint = None
            if replay_endpoint is not None:
                self._rep = self._bind(zmq.REP, replay_endpoint, curve, 0)
                self.replay_endpoint = self._rep.last_endpoint.decode()
            self.journal = EventJournal(journal_path)  # after the binds: a refused port leaves no journal behind
            if self._rep is not None:
                self._replay_thread = threading.Thread(target=self._serve_replays, name="mer-event-replay",
                                                       daemon=True)
                self._replay_thread.start()
        except BaseException:
            self.close()
            raise
        log.info("publishing events on %s (replay %s, journal %s, next seq %d)", self.endpoint,
                 self.replay_endpoint or "off", self.journal.path, self.journal.last_seq() + 1)

    def _bind(self, kind: int, endpoint: str, curve: CurveServerKeys | None, linger_s: float,
              sndhwm: int | None = None) -> zmq.Socket:
        socket = self.context.socket(kind)
        socket.linger = int(linger_s * 1000)
        if sndhwm is not None:
            socket.sndhwm = sndhwm
        if curve is not None:
            curve.apply(socket)
        try:
            socket.bind(endpoint)
        except zmq.ZMQError as exc:
            socket.close(linger=0)
            raise MerError(f"cannot bind {endpoint}: {zmq.strerror(exc.errno)}") from None
        return socket

    @property
    def last_seq(self) -> int:
        """The seq of the last published event (0 before the first one, ever, on this journal)."""
        return self.journal.last_seq()

    def publish(self, draft: Mapping[str, Any]) -> dict[str, Any] | None:
        """Stamp a draft from ``make_event``, journal it (fsync), then send it; returns the event.

        Returns None, sending nothing, when the journal cannot take the event (counted in
        ``dropped``). Never blocks on subscribers: a PUB socket drops what a slow one cannot take.
        """
        with self._lock:
            if self._pub is None:
                raise RuntimeError("publisher is closed")
            event = complete_event(draft, seq=self.journal.last_seq() + 1)
            try:
                payload = self.journal.append(event)
            except JournalWriteError as exc:
                self.dropped[exc.reason] += 1
                self.last_drop = exc
                log.error("event of stream %s not published (%s, %d so far): %s", event["stream"], exc.reason,
                          sum(self.dropped.values()), exc)
                reason = exc.reason
            else:
                self._pub.send_multipart([topic_for(event["stream"]), payload])
                return event
        if self.on_drop is not None:
            self.on_drop(reason)
        return None

    def _serve_replays(self) -> None:
        assert self._rep is not None
        while not self._stop.is_set():
            if not self._rep.poll(_POLL_MS):
                continue
            request = self._rep.recv()
            try:
                reply = self._answer(request)
            except Exception:  # the REP socket must answer every request, whatever went wrong
                log.exception("replay request %r failed", request[:200])
                reply = json.dumps({"error": "internal error"}).encode()
            self._rep.send(reply)

    def _answer(self, request: bytes) -> bytes:
        try:
            query = json.loads(request)
        except ValueError:
            query = None
        from_seq = query.get("from_seq") if isinstance(query, dict) else None
        to_seq = query.get("to_seq") if isinstance(query, dict) else None
        if not is_integer(from_seq) or from_seq < 1 or not (to_seq is None or is_integer(to_seq)):
            return json.dumps({"error": 'expected {"from_seq": N >= 1, "to_seq": M (optional)}'}).encode()
        last = self.journal.last_seq()
        lines = self.journal.read_lines(from_seq, to_seq, limit=self.replay_batch)
        end = last if to_seq is None else min(to_seq, last)
        more = len(lines) == self.replay_batch and json.loads(lines[-1])["seq"] < end
        log.debug("replaying %d events from seq %d", len(lines), from_seq)
        return b'{"events":[' + b",".join(lines) + f'],"last_seq":{last},"more":{json.dumps(more)}}}'.encode()

    def close(self) -> None:
        """Stop the replay server and close the sockets; queued messages get ``linger_s`` to go out."""
        self._stop.set()
        if self._replay_thread is not None:
            self._replay_thread.join()
            self._replay_thread = None
        with self._lock:
            for socket in (self._rep, self._pub):
                if socket is not None:
                    socket.close()
            self._rep = self._pub = None
            if self.journal is not None:
                self.journal.close()
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._owns_context:
            self.context.term()  # waits for the linger of the PUB socket: the last events are flushed

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

