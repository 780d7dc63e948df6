"""Receives ``mer.event/1`` events in ``seq`` order, with nothing missing and nothing twice.

ZeroMQ SUB sockets lose messages while they connect (the "slow joiner"), while the
publisher restarts and when they fall too far behind. The subscriber repairs all of
that from the publisher's journal over its REQ/REP replay endpoint:

* ``from_seq=N`` first replays ``N..`` and then continues live;
* a live event whose ``seq`` skips ahead triggers a replay of the gap;
* after ``catch_up_interval_s`` without live traffic it asks for anything newer, which
  catches events lost at the tail, with no later event to reveal the gap.

Events already delivered (a live copy of a replayed event) are dropped. A message that is not
a valid ``mer.event/1`` event (``streamer.events.decode_event``), live or replayed, is never
delivered: it is logged and counted in ``rejected``. A publisher that rejects this
subscriber's keys (or its lack of keys) is an error saying so, rather than silence.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import zmq

from engines.errors import InputError, MerError
from streamer.event_transport import (
    DEFAULT_ENDPOINT,
    DEFAULT_REPLAY_ENDPOINT,
    CurveClientKeys,
    HandshakeMonitor,
    require_curve_support,
)
from streamer.events import decode_event, is_integer, validate_event
from streamer.publisher import TOPIC_PREFIX, topic_for

__all__ = ["EventSubscriber", "ReplayError"]

log = logging.getLogger(__name__)


class ReplayError(MerError):
    """The replay endpoint did not answer, or answered with an error."""


class EventSubscriber:
    """SUB side of the event stream; ``receive()`` returns the next event in ``seq`` order.

    ``from_seq=None`` starts with the first live event. ``stream`` keeps only one stream's
    events. ``replay_endpoint=None`` turns repairs off (gaps are then only logged).
    ``receive_hwm`` is how many live messages may wait unread before ZeroMQ drops newer ones.
    ``receive`` raises :class:`~streamer.event_transport.HandshakeError` when the publisher
    refuses the connection's security handshake (missing, unauthorised or wrong CURVE keys).
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        replay_endpoint: str | None = DEFAULT_REPLAY_ENDPOINT,
        *,
        from_seq: int | None = None,
        stream: str | None = None,
        curve: CurveClientKeys | None = None,
        context: zmq.Context | None = None,
        replay_timeout_s: float = 2.0,
        catch_up_interval_s: float | None = 1.0,
        receive_hwm: int = 1000,
    ) -> None:
        if from_seq is not None and not (is_integer(from_seq) and from_seq >= 1):
            raise MerError(f"from_seq must be an integer >= 1, got {from_seq!r}")
        if curve is not None:
            require_curve_support()
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self.stream = stream
        self.curve = curve
        self.replay_timeout_s = replay_timeout_s
        self.catch_up_interval_s = catch_up_interval_s if replay_endpoint is not None else None
        self._owns_context = context is None
        self.context = zmq.Context() if context is None else context
        self._next_seq = from_seq
        self._initial_replay = from_seq is not None and replay_endpoint is not None
        self._pending: deque[dict[str, Any]] = deque()
        self._request_socket: zmq.Socket | None = None
        self._handshake: HandshakeMonitor | None = None
        self.replayed = 0  # events that came from the journal rather than live
        self.rejected = 0  # messages that were not mer.event/1 events: logged, never delivered
        self.gaps: list[tuple[int, int]] = []  # seq ranges missing from the live stream
        self.missed: list[tuple[int, int]] = []  # seq ranges that could not be replayed
        self._sub = self.context.socket(zmq.SUB)
        try:
            self._sub.linger = 0
            self._sub.rcvhwm = receive_hwm
            if curve is not None:
                curve.apply(self._sub)
            self._handshake = HandshakeMonitor(self._sub, endpoint, curve=curve is not None)
            self._poller = zmq.Poller()
            self._poller.register(self._sub, zmq.POLLIN)
            self._poller.register(self._handshake.monitor, zmq.POLLIN)
            self._sub.subscribe(topic_for(stream) if stream is not None else TOPIC_PREFIX.encode())
            self._sub.connect(endpoint)
        except BaseException:
            self.close()
            raise

    @property
    def next_seq(self) -> int | None:
        """The seq expected next (None until the first event when started without ``from_seq``)."""
        return self._next_seq

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event, or None when none arrived within ``timeout`` seconds (None: wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._initial_replay:
            self._first_replay(deadline)
        last_activity = time.monotonic()
        while not self._pending:
            self._handshake.check()
            now = time.monotonic()
            waits = [] if deadline is None else [deadline - now]
            if self.catch_up_interval_s is not None and self._next_seq is not None:
                waits.append(last_activity + self.catch_up_interval_s - now)
            wait_ms = None if not waits else max(0, int(min(waits) * 1000))
            ready = dict(self._poller.poll(wait_ms))
            if self._sub in ready:
                self._accept_live(self._sub.recv_multipart())
                last_activity = time.monotonic()
                continue
            if self._handshake.monitor in ready:
                continue  # read by check() at the top of the loop
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if self.catch_up_interval_s is not None and self._next_seq is not None:
                self._catch_up()
                last_activity = time.monotonic()
        return self._pending.popleft()

    def _first_replay(self, deadline: float | None) -> None:
        """The history from ``from_seq``; a publisher that is not up yet is waited for until ``deadline``.

        A subscriber is often started before (or together with) the publisher it follows, so
        an unanswered first request is retried rather than fatal.
        """
        while True:
            try:
                self._replay(self._next_seq, None)
            except ReplayError as exc:
                if deadline is not None and time.monotonic() + self.replay_timeout_s > deadline:
                    raise
                log.info("%s; retrying", exc)
                continue
            self._initial_replay = False
            return

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            event = self.receive()
            if event is not None:
                yield event

    def _accept_live(self, frames: list[bytes]) -> None:
        try:
            event = decode_event(frames[-1])
        except InputError as problem:
            self._reject(problem, frames[-1])
            return
        seq = event["seq"]
        if self._next_seq is None:
            self._next_seq = seq
        if seq < self._next_seq:
            return  # already delivered from a replay
        if seq > self._next_seq:
            gap = (self._next_seq, seq - 1)
            self.gaps.append(gap)
            log.info("seq gap %d..%d; replaying it", *gap)
            try:
                self._replay(gap[0], gap[1])
            except ReplayError as exc:
                log.warning("lost events %d..%d: %s", gap[0], gap[1], exc)
            if self._next_seq <= gap[1]:
                self.missed.append((self._next_seq, gap[1]))
        self._deliver(event)

    def _reject(self, problem: InputError, message: object) -> None:
        self.rejected += 1
        log.warning("ignoring a message that is not a mer.event/1 event (%s): %.200r", problem, message)

    def _deliver(self, event: dict[str, Any]) -> None:
        self._next_seq = event["seq"] + 1
        if self.stream is None or event.get("stream") == self.stream:
            self._pending.append(event)

    def _catch_up(self) -> None:
        try:
            self._replay(self._next_seq, None)
        except ReplayError as exc:
            log.debug("catch-up replay failed: %s", exc)

    def _replay(self, from_seq: int, to_seq: int | None) -> None:
        """Fetch ``from_seq..to_seq`` from the journal into the pending queue, batch after batch."""
        if self.replay_endpoint is None:
            raise ReplayError("no replay endpoint")
        while True:
            query = {"from_seq": from_seq} if to_seq is None else {"from_seq": from_seq, "to_seq": to_seq}
            reply = self._request(query)
            events = reply.get("events")
            if "error" in reply or not isinstance(events, list):
                problem = " ".join(str(reply.get("error", "malformed reply")).split())  # one line, whatever it sent
                raise ReplayError(f"replay endpoint {self.replay_endpoint}: {problem[:200]}")
            newest = None
            for event in events:
                try:
                    validate_event(event)
                except InputError as problem:
                    self._reject(problem, event)
                    continue
                newest = event["seq"] if newest is None else max(newest, event["seq"])
                if self._next_seq <= event["seq"] <= (to_seq if to_seq is not None else event["seq"]):
                    self._deliver(event)
                    self.replayed += 1
            # Ask again only after progress, so that a reply repeating itself cannot loop forever.
            if not reply.get("more") or newest is None or newest < from_seq:
                return
            from_seq = newest + 1

    def _request(self, query: dict[str, Any]) -> dict[str, Any]:
        """One REQ/REP round trip; on timeout the REQ socket is discarded (it cannot send again)."""
        if self._request_socket is None:
            self._request_socket = self.context.socket(zmq.REQ)
            self._request_socket.linger = 0
            if self.curve is not None:
                self.curve.apply(self._request_socket)
            self._request_socket.connect(self.replay_endpoint)
        self._request_socket.send(json.dumps(query).encode())
        if not self._await_reply(time.monotonic() + self.replay_timeout_s):
            self._request_socket.close()
            self._request_socket = None
            raise ReplayError(f"replay endpoint {self.replay_endpoint}: no reply within {self.replay_timeout_s:g} s "
                              "(is the publisher running, with the same CURVE keys?)")
        try:
            reply = json.loads(self._request_socket.recv())
        except (ValueError, RecursionError):  # not UTF-8 or not JSON, or nested too deep to parse
            raise ReplayError(f"replay endpoint {self.replay_endpoint}: reply is not JSON") from None
        if not isinstance(reply, dict):
            raise ReplayError(f"replay endpoint {self.replay_endpoint}: reply is not a JSON object")
        return reply

    def _await_reply(self, deadline: float) -> bool:
        """Wait for the reply until ``deadline``; a refused handshake ends the wait with its reason."""
        poller = zmq.Poller()
        poller.register(self._request_socket, zmq.POLLIN)
        poller.register(self._handshake.monitor, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(max(0, int((deadline - time.monotonic()) * 1000))))
            if self._request_socket in ready:
                return True
            self._handshake.check()
            if time.monotonic() >= deadline:
                return False

    def close(self) -> None:
        if self._handshake is not None:
            self._handshake.close()
            self._handshake = None
        for socket in (self._request_socket, self._sub):
            if socket is not None:
                socket.close()
        self._request_socket = None
        if self._owns_context:
            self.context.term()

    def __enter__(self) -> EventSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
