"""Receives ``mer.event/1`` events in ``seq`` order, with nothing missing and nothing twice.

ZeroMQ SUB sockets lose messages while they connect (the "slow joiner"), while the
publisher restarts and when they fall too far behind. The subscriber repairs all of
that from the publisher's journal over its REQ/REP replay endpoint:

* ``from_seq=N`` first replays ``N..`` and then continues live;
* a live event whose ``seq`` skips ahead triggers a replay of the gap;
* after ``catch_up_interval_s`` without live traffic it asks for anything newer, which
  catches events lost at the tail, with no later event to reveal the gap.

Events already delivered (a live copy of a replayed event) are dropped.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import zmq

from engines.errors import MerError
from streamer.event_transport import DEFAULT_ENDPOINT, DEFAULT_REPLAY_ENDPOINT, CurveClientKeys, require_curve_support
from streamer.events import is_integer
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
        self.replayed = 0  # events that came from the journal rather than live
        self.gaps: list[tuple[int, int]] = []  # seq ranges missing from the live stream
        self.missed: list[tuple[int, int]] = []  # seq ranges that could not be replayed
        self._sub = self.context.socket(zmq.SUB)
        try:
            self._sub.linger = 0
            self._sub.rcvhwm = receive_hwm
            if curve is not None:
                curve.apply(self._sub)
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
            now = time.monotonic()
            waits = [] if deadline is None else [deadline - now]
            if self.catch_up_interval_s is not None and self._next_seq is not None:
                waits.append(last_activity + self.catch_up_interval_s - now)
            wait_ms = None if not waits else max(0, int(min(waits) * 1000))
            if self._sub.poll(wait_ms):
                self._accept_live(self._sub.recv_multipart())
                last_activity = time.monotonic()
                continue
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
            event = json.loads(frames[-1])
            seq = event["seq"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a message that is not an event: %r", frames[-1][:200])
            return
        if not is_integer(seq):
            log.warning("ignoring an event with a non-integer seq %r", seq)
            return
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
                raise ReplayError(f"replay endpoint {self.replay_endpoint}: {reply.get('error', 'malformed reply')}")
            for event in events:
                if is_integer(event.get("seq")) and event["seq"] >= self._next_seq:
                    self._deliver(event)
                    self.replayed += 1
            if not reply.get("more") or not events:
                return
            from_seq = events[-1]["seq"] + 1

    def _request(self, query: dict[str, Any]) -> dict[str, Any]:
        """One REQ/REP round trip; on timeout the REQ socket is discarded (it cannot send again)."""
        if self._request_socket is None:
            self._request_socket = self.context.socket(zmq.REQ)
            self._request_socket.linger = 0
            if self.curve is not None:
                self.curve.apply(self._request_socket)
            self._request_socket.connect(self.replay_endpoint)
        self._request_socket.send(json.dumps(query).encode())
        if not self._request_socket.poll(int(self.replay_timeout_s * 1000)):
            self._request_socket.close()
            self._request_socket = None
            raise ReplayError(f"replay endpoint {self.replay_endpoint}: no reply within {self.replay_timeout_s:g} s "
                              "(is the publisher running, with the same CURVE keys?)")
        try:
            reply = json.loads(self._request_socket.recv())
        except ValueError:
            raise ReplayError(f"replay endpoint {self.replay_endpoint}: reply is not JSON") from None
        if not isinstance(reply, dict):
            raise ReplayError(f"replay endpoint {self.replay_endpoint}: reply is not a JSON object")
        return reply

    def close(self) -> None:
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
