"""The capture thread: reads a source into a bounded queue so decoding never waits on analysis.

A live source (camera, network stream) runs on its own clock; if the pipeline falls
behind, stalling the reader would only make the frames older and overflow the socket or
driver buffers. So for live sources the queue drops a frame instead (``drop_oldest`` keeps
the pipeline current, ``drop_newest`` keeps the frames it has contiguous), and every
dropped frame is counted with its reason. A file has no clock to keep up with: the loop
waits for the consumer and every frame is analysed.

A live source that is lost (read error, timeout, end of stream) is reopened with
exponential backoff; frame numbers and stream time keep increasing across reconnections,
the time without frames is counted, and the first frame after the gap is marked
``discontinuous`` so that the pipeline tracks faces afresh.

    with CaptureLoop("rtsp://camera/stream", config.capture) as loop:
        for frame in loop:          # ends at the end of a file, or after stop()
            ...
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import closing

from engines.errors import InputError, MerError
from streamer.frames import Frame
from streamer.sources import FrameSource, LiveClock, SourceLost, open_source
from streamer.stream_config import CaptureConfig, ReconnectConfig

__all__ = ["CaptureCounters", "CaptureLoop", "FrameQueue", "backoff_delays"]

log = logging.getLogger(__name__)

DropHook = Callable[[str, int], None]  # (reason, frame index)

# How a drop reason reads in a sentence: "frames 53-60 could not be decoded".
_DROP_PHRASES = {
    "decode_error": "could not be decoded",
    "truncated": "could not be read: the file ends early",
    "queue_full": "had to be dropped: processing fell behind",
    "stopped": "were read but not analysed: the stream was stopped",
}


class CaptureCounters:
    """What happened to the frames of one stream; the hooks let metrics follow it live.

    Plain integers and callbacks so that this module needs no metrics library: the pipeline
    wires ``on_read``/``on_drop``/``on_reconnect``/``on_gap`` to its Prometheus counters, or
    polls. Written only by the capture thread.
    """

    def __init__(
        self,
        *,
        on_read: Callable[[Frame], None] | None = None,
        on_drop: DropHook | None = None,
        on_reconnect: Callable[[int], None] | None = None,
        on_gap: Callable[[float], None] | None = None,
    ) -> None:
        self.frames_read = 0  # frames the source delivered (dropped ones included)
        self.frames_dropped: Counter[str] = Counter()  # reason -> frames never given to the consumer
        self.dropped_span: dict[str, tuple[int, int]] = {}  # reason -> (first, last) frame number dropped
        self.reconnects = 0  # successful reopenings of a lost live source
        self.lost_s = 0.0  # seconds without frames while a lost source was being reopened, summed
        self.on_read = on_read
        self.on_drop = on_drop
        self.on_reconnect = on_reconnect
        self.on_gap = on_gap

    def read(self, frame: Frame) -> None:
        self.frames_read += 1
        if self.on_read is not None:
            self.on_read(frame)

    def drop(self, reason: str, index: int) -> None:
        self.frames_dropped[reason] += 1
        first, _ = self.dropped_span.get(reason, (index, index))
        self.dropped_span[reason] = (first, index)
        if self.on_drop is not None:
            self.on_drop(reason, index)

    def reconnected(self, lost_s: float = 0.0) -> None:
        """A lost source is back after ``lost_s`` seconds without frames."""
        self.reconnects += 1
        self.lost_s += lost_s
        if self.on_reconnect is not None:
            self.on_reconnect(self.reconnects)
        if self.on_gap is not None:
            self.on_gap(lost_s)

    def describe_drops(self) -> str:
        """The dropped frames in words, for an error message; "" when none was dropped."""
        parts = []
        for reason, count in sorted(self.frames_dropped.items()):
            first, last = self.dropped_span[reason]
            if count == 1:
                which = f"frame {first}"
            elif last - first + 1 == count:
                which = f"frames {first}-{last}"
            else:
                which = f"{count} frames between {first} and {last}"
            parts.append(f"{which} {_DROP_PHRASES.get(reason, f'had to be dropped ({reason})')}")
        return "; ".join(parts)

    def snapshot(self) -> dict:
        return {"frames_read": self.frames_read, "frames_dropped": dict(self.frames_dropped),
                "reconnects": self.reconnects}


class FrameQueue:
    """A bounded frame queue that either waits for room (files) or drops (live sources)."""

    def __init__(self, capacity: int, drop_policy: str) -> None:
        if drop_policy not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"unknown drop policy {drop_policy!r}")
        self.capacity = capacity
        self.drop_policy = drop_policy
        self._frames: deque[Frame] = deque()
        self._changed = threading.Condition()
        self._closed = False  # no more frames will come; consumers drain what is left
        self._cancelled = False  # stop now; what is left is discarded

    def put_nowait(self, frame: Frame) -> Frame | None:
        """Queue ``frame`` without waiting; returns the frame the drop policy dropped, if any."""
        with self._changed:
            if self._cancelled:
                return frame
            dropped = None
            if len(self._frames) >= self.capacity:
                if self.drop_policy == "drop_newest":
                    return frame
                dropped = self._frames.popleft()
            self._frames.append(frame)
            self._changed.notify_all()
            return dropped

    def put_wait(self, frame: Frame) -> bool:
        """Queue ``frame``, waiting for room; False if the queue was cancelled meanwhile."""
        with self._changed:
            self._changed.wait_for(lambda: self._cancelled or len(self._frames) < self.capacity)
            if self._cancelled:
                return False
            self._frames.append(frame)
            self._changed.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame; None once the queue is closed and empty, or cancelled.

        Raises ``TimeoutError`` if nothing arrived within ``timeout`` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self._frames or self._closed or self._cancelled, timeout):
                raise TimeoutError(f"no frame within {timeout} s")
            if self._cancelled or not self._frames:
                return None
            frame = self._frames.popleft()
            self._changed.notify_all()
            return frame

    def __len__(self) -> int:
        return len(self._frames)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def cancel(self) -> list[Frame]:
        """Stop now; returns the queued frames nobody will get, for the caller to count."""
        with self._changed:
            self._cancelled = True
            discarded = list(self._frames)
            self._frames.clear()
            self._changed.notify_all()
            return discarded


def backoff_delays(config: ReconnectConfig) -> Iterator[float]:
    """Seconds to wait before each reopen attempt: doubling from initial_delay_s up to max_delay_s."""
    delay = config.initial_delay_s
    attempt = 0
    while config.max_attempts == 0 or attempt < config.max_attempts:
        yield delay
        attempt += 1
        delay = min(delay * 2, config.max_delay_s)


class CaptureLoop:
    """Runs a source in a background thread and hands its frames out through a bounded queue.

    ``source`` is a spec for ``open_source`` (webcam index, URL, file path), opened in colour or,
    with ``color=False``, as grey luma, or an open ``FrameSource``. Opening happens in
    ``start()``, in the caller's thread, so a bad path or
    URL fails there with ``InputError``. Iterating yields frames until the stream ends (a
    file's end, or a live source that could not be reopened: then the iteration raises).
    """

    def __init__(
        self,
        source: str | int | FrameSource,
        config: CaptureConfig | None = None,
        *,
        counters: CaptureCounters | None = None,
        get_timeout_s: float | None = None,
        color: bool = True,
    ) -> None:
        self.config = config or CaptureConfig()
        self.color = color
        self.counters = counters or CaptureCounters()
        self.state = "idle"  # idle | running | reconnecting | ended
        self._spec = source
        self._source: FrameSource | None = source if isinstance(source, FrameSource) else None
        self._queue = FrameQueue(self.config.queue_size, self.config.drop_policy)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._get_timeout_s = get_timeout_s
        self._last_frame_at: float | None = None  # captured_at of the last frame read (for the gap)
        self._resuming = False  # the next frame is the first after a reconnection

    @property
    def source(self) -> FrameSource | None:
        """The source being read (a new object after each reconnection)."""
        return self._source

    def start(self) -> CaptureLoop:
        if self._thread is not None:
            raise RuntimeError("CaptureLoop.start() called twice")
        if self._source is None:
            self._source = open_source(self._spec, self.config, clock=LiveClock(), on_skip=self.counters.drop,
                                       color=self.color)
        elif self._source.on_skip is None:
            self._source.on_skip = self.counters.drop
        self.state = "running"
        self._thread = threading.Thread(target=self._run, name=f"capture {self._source.name}", daemon=True)
        self._thread.start()
        return self

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is None:
            self.start()
        while True:
            frame = self._queue.get(self._get_timeout_s)
            if frame is None:
                break
            yield frame
        if self._failure is not None and not self._stopping.is_set():
            raise self._failure

    def stop(self, timeout: float = 10.0) -> None:
        """End the capture now: the consumer's iteration ends, queued frames are discarded (and
        counted as dropped, reason ``stopped``, once the capture thread has ended)."""
        self._stopping.set()
        discarded = self._queue.cancel()
        if self._source is not None:
            self._source.interrupt()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive() and timeout > 0:  # 0: a signal handler that cannot wait
                log.warning("capture thread of %s did not stop within %.1f s", self._source.name, timeout)
        for frame in discarded:
            self.counters.drop("stopped", frame.index)

    def __enter__(self) -> CaptureLoop:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- the capture thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                next_index = self._read_all(self._source)
                if self._stopping.is_set() or self._source.kind == "file":  # a file's end is the end
                    break
                if not self._reconnect(next_index):
                    break
        except BaseException as exc:  # handed to the consumer instead of dying silently
            log.exception("capture of %s failed", self._source.name)
            self._failure = exc
        finally:
            self.state = "ended"
            if self._source is not None:
                self._source.close()
            self._queue.close()

    def _read_all(self, source: FrameSource) -> int:
        """Move frames from ``source`` to the queue until it ends or is lost; the next frame index."""
        next_index = source.first_index
        wait_for_consumer = not source.live
        try:
            with closing(source.frames()) as frames:
                for frame in frames:
                    if self._resuming:
                        frame = dataclasses.replace(frame, discontinuous=True)
                        self._resuming = False
                    next_index = frame.index + 1
                    self._last_frame_at = frame.captured_at
                    self.counters.read(frame)
                    if wait_for_consumer:
                        if not self._queue.put_wait(frame):
                            self.counters.drop("stopped", frame.index)
                            break
                        continue
                    dropped = self._queue.put_nowait(frame)
                    if dropped is not None:
                        self.counters.drop("stopped" if self._stopping.is_set() else "queue_full", dropped.index)
        except SourceLost as exc:
            log.warning("%s", exc)
        return next_index

    def _reconnect(self, next_index: int) -> bool:
        """Reopen the lost live source with backoff; False if it gave up or was stopped."""
        self.state = "reconnecting"
        lost = self._source
        lost.close()
        attempt = 0
        last_error: Exception | None = None
        for delay in backoff_delays(self.config.reconnect):
            attempt += 1
            log.info("%s: reconnecting in %g s (attempt %d)", lost.name, delay, attempt)
            if self._stopping.wait(delay):
                return False
            try:
                self._source = lost.reopen(next_index)
            except (MerError, OSError) as exc:
                last_error = exc
                log.warning("%s: reconnect attempt %d failed: %s", lost.name, attempt, exc)
                continue
            if self._stopping.is_set():  # stop() interrupted the old source, not this one
                self._source.interrupt()
            lost_since = self._last_frame_at if self._last_frame_at is not None else time.monotonic()
            self.counters.reconnected(time.monotonic() - lost_since)
            self._resuming = True
            self.state = "running"
            log.info("%s: reconnected after %d attempt(s); frames continue at %d", lost.name, attempt, next_index)
            return True
        self._failure = InputError(
            f"{lost.name}: source lost and not reopened after {attempt} attempts: {last_error}")
        return False
