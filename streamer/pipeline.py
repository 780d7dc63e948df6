"""One stream's recognizer: frames in, per-face rows and micro-expression events out.

For every frame the face tracker updates its tracks; each tracked face pushes its aligned
crop into its own ring buffer and spotter. When a spotter finalises an interval, the
onset and apex crops are taken from that face's ring, the recognizer classifies them, and
the event draft goes to ``emit`` (the ZeroMQ publisher for ``mer stream``, a JSONL writer
for ``mer analyze``). A face that leaves ends its track: its spotter is flushed first, so
an expression right before the face turned away is still reported.

While an interval waits out the spotter's look-ahead, its onset and apex are already known
(the spotter's ``provisional`` bounds): the pipeline classifies it then, during frames whose
budget is otherwise idle, so that the final event is published without waiting for the motion
kernels and the engine. If the final bounds moved, it is classified again (``PipelineStats``
counts hits and misses).

A cut in the stream ends every face the same way: a frame marked ``discontinuous`` (the first
after a reconnection or of a new pass over a looping file) or a frame of a new size (a camera
that changed its resolution). Each face's pending intervals are flushed, its ring is dropped,
and tracking starts afresh on that frame, so no ring ever mixes crops from both sides of the
cut and no spotter sees the cut as motion.

The pipeline is single-threaded and owns no I/O; capture, publishing and metrics serving
are the callers' business, which keeps it equally usable live and offline. Its tracker may
run in another process (``mer analyze`` on two cores: streamer/front_end_worker.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streamer.events import make_event
from streamer.faces import FaceTracker
from streamer.frames import Frame, cut_before
from streamer.metrics import StreamMetrics
from streamer.outputs import FaceFrameRow
from streamer.recognizer import Recognition, Recognizer
from streamer.spotting import FaceRingBuffer, SpottedInterval
from streamer.spotting.ring_buffer import FrameEvictedError

log = logging.getLogger(__name__)

__all__ = ["Pipeline", "PipelineStats"]


@dataclass
class _Face:
    ring: FaceRingBuffer
    spotter: object  # a Spotter (streamer.spotting): push/flush/signal/look_ahead_s
    # (frame index, captured_at) of the frames this face was seen in, for event latency.
    captured: dict[int, float] = field(default_factory=dict)
    # Speculative recognition: (onset, apex) -> its Recognition, computed while the interval was
    # still inside the spotter's look-ahead; and the spotter regions already speculated on.
    prepared: dict[tuple[int, int], Recognition] = field(default_factory=dict)
    speculated: set[int] = field(default_factory=set)


@dataclass
class PipelineStats:
    """Counts a run reports at the end (and tests check)."""

    frames: int = 0
    frames_with_faces: int = 0
    intervals: int = 0
    events: int = 0
    intervals_lost: int = 0  # spotted but their crops had left the ring (counted, never silent)
    # Cuts in the stream after which every face was tracked afresh, by cause ("discontinuity":
    # reconnection or loop restart; "resolution_change"); see the module docstring.
    restarts: dict[str, int] = field(default_factory=dict)
    # Intervals classified during the look-ahead whose final bounds kept the same onset and apex
    # (hits), and speculative classifications thrown away because the bounds moved (misses).
    speculative_hits: int = 0
    speculative_misses: int = 0
    # Per event: (spotter's decision delay = stream time from the offset frame to the frame that
    # finalised the interval, in s; the event's latency_ms). Latency minus the decision delay is
    # what the machine adds: queueing, face, spot, motion, inference, publish.
    event_delays: list[tuple[float, float]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "face": 0.0, "spot": 0.0, "motion": 0.0,
                                                                     "inference": 0.0, "publish": 0.0})


class Pipeline:
    """Tracker -> per-face ring buffer and spotter -> recognizer -> ``emit(draft)``.

    ``make_spotter(fps)`` builds a fresh spotter for each new face; ``emit`` receives each
    event draft (``streamer.events.make_event``) and returns the completed event, if any.
    """

    def __init__(
        self,
        *,
        stream_id: str,
        tracker: FaceTracker,
        make_spotter: Callable[[float], object],
        recognizer: Recognizer,
        fps: float,
        emit: Callable[[dict], dict | None],
        ring_seconds: float = 5.0,
        metrics: StreamMetrics | None = None,
    ) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.stream_id = stream_id
        self.tracker = tracker
        self.make_spotter = make_spotter
        self.recognizer = recognizer
        self.fps = float(fps)
        self.emit = emit
        self.metrics = metrics
        self.ring_capacity = max(8, math.ceil(ring_seconds * fps))
        self.crop_size = tracker.aligner.size
        self.stats = PipelineStats()
        # Clip engines may need colour crops kept in the ring, and the interval's offset (then
        # nothing can be classified before the interval is final: no speculation).
        self._needs_color = bool(getattr(recognizer, "needs_color", False))
        self._speculate = not getattr(recognizer, "needs_offset", False)
        self._faces: dict[int, _Face] = {}
        self._last_t = 0.0
        self._frame_shape: tuple[int, ...] | None = None

    @property
    def look_ahead_s(self) -> float:
        """How long after an interval's offset its event can be published, at best."""
        return self.make_spotter(self.fps).look_ahead_s

    def process(self, frame: Frame) -> list[FaceFrameRow]:
        """Run one frame; returns one row per tracked face (one ``success=False`` row when none)."""
        self.stats.frames += 1
        cut = self._cut_before(frame)
        if cut is not None:
            self.stats.restarts[cut] = self.stats.restarts.get(cut, 0) + 1
            self._end_all_faces()
        self._last_t = frame.t
        self._observe("decode", frame.decode_s)
        start = time.perf_counter()
        faces = self.tracker.update(frame)
        # A tracker that runs in another process (streamer/front_end_worker.py) reports its own time.
        remote_s = getattr(self.tracker, "last_update_s", None)
        self._observe("face", time.perf_counter() - start if remote_s is None else remote_s)
        rows: list[FaceFrameRow] = []
        start = time.perf_counter()
        finished: list[tuple[int, SpottedInterval]] = []
        speculate: list[tuple[_Face, tuple[int, int]]] = []
        for face in faces:
            state = self._faces.get(face.track_id)
            if state is None:
                ring = FaceRingBuffer(self.ring_capacity, self.crop_size, color=self._needs_color)
                state = self._faces[face.track_id] = _Face(ring, self.make_spotter(self.fps))
                log.info("stream %s: face %d appeared at frame %d", self.stream_id, face.track_id, frame.index)
            aligned = face.aligned
            state.ring.push(aligned.gray, frame.t, frame.index, aligned.points,
                            color=aligned.color if self._needs_color else None)
            state.captured[frame.index] = frame.captured_at
            if len(state.captured) > self.ring_capacity:
                del state.captured[next(iter(state.captured))]
            for interval in state.spotter.push(aligned.gray, frame.t, frame.index, aligned.points):
                finished.append((face.track_id, interval))
            for region, pair in state.spotter.provisional.items() if self._speculate else ():
                if region not in state.speculated:
                    state.speculated.add(region)
                    speculate.append((state, pair))
            rows.append(FaceFrameRow(frame.index, frame.t, face.track_id, float(face.landmarks.confidence), True,
                                     face.landmarks.points, float(state.spotter.signal)))
        ended = self.tracker.ended()
        for track_id in ended:
            finished.extend(self._end_face(track_id))
        self._observe("spot", time.perf_counter() - start)
        if faces:
            self.stats.frames_with_faces += 1
        else:
            rows.append(FaceFrameRow(frame.index, frame.t, -1, 0.0, False, None, None))
        if self.metrics is not None:
            self.metrics.set_faces_tracked(len(faces))
            if self._faces:
                self.metrics.set_ring_buffer_fill(max(state.ring.fill for state in self._faces.values()))
        for track_id, interval in finished:
            self._recognise(track_id, interval, frame.t)
        for state, pair in speculate:
            self._prepare(state, pair)
        for track_id in ended:
            self._faces.pop(track_id, None)
        return rows

    def close(self) -> None:
        """End of stream: every face's pending intervals are flushed, classified and emitted."""
        self._end_all_faces()

    def _cut_before(self, frame: Frame) -> str | None:
        """Why ``frame`` does not follow on from the frame before it, if it does not."""
        shape, self._frame_shape = self._frame_shape, frame.image.shape
        cut = cut_before(frame, shape, first=self.stats.frames == 1)
        if cut == "resolution_change":
            log.info("stream %s: frame %d is %dx%d, the frames before were %dx%d: faces are tracked afresh",
                     self.stream_id, frame.index, frame.image.shape[1], frame.image.shape[0], shape[1], shape[0])
        elif cut == "discontinuity":
            log.info("stream %s: the stream was cut before frame %d: faces are tracked afresh", self.stream_id,
                     frame.index)
        return cut

    def _end_all_faces(self) -> None:
        """End every track (end of stream, or a cut in it): flush, classify and emit what is pending."""
        self.tracker.reset()
        finished = [pair for track_id in self.tracker.ended() for pair in self._end_face(track_id)]
        for track_id, interval in finished:
            self._recognise(track_id, interval, self._last_t)
        self._faces.clear()

    def _end_face(self, track_id: int) -> list[tuple[int, SpottedInterval]]:
        state = self._faces.get(track_id)
        if state is None:
            return []
        log.info("stream %s: face %d ended", self.stream_id, track_id)
        return [(track_id, interval) for interval in state.spotter.flush()]

    def _recognise(self, track_id: int, interval: SpottedInterval, decided_t: float) -> None:
        self.stats.intervals += 1
        if self.metrics is not None:
            self.metrics.interval_spotted(interval.kind)
        state = self._faces.get(track_id)
        result = state.prepared.pop((interval.onset, interval.apex), None) if state is not None else None
        if state is not None:
            self._forget_speculation(state, interval)
        if result is not None:
            self.stats.speculative_hits += 1
        else:
            try:
                if state is None:
                    raise FrameEvictedError(f"face {track_id} has no ring any more")
                result = self._classify(state, (interval.onset, interval.apex), interval.offset)
            except LookupError as exc:
                self.stats.intervals_lost += 1
                log.warning("stream %s face %d: interval %d-%d not classified: %s", self.stream_id, track_id,
                            interval.onset, interval.offset, exc)
                return
        captured_at = state.captured.get(interval.offset, time.monotonic())
        draft = make_event(interval, stream=self.stream_id, face=track_id, label=result.label, scores=result.scores,
                           engine=self.recognizer.engine_id, captured_at=captured_at)
        start = time.perf_counter()
        event = self.emit(draft)
        self._observe("publish", time.perf_counter() - start)
        self.stats.events += 1
        if event is not None:
            self.stats.event_delays.append((max(0.0, decided_t - interval.offset_t), float(event["latency_ms"])))
        if self.metrics is not None and event is not None:
            self.metrics.event_published(event)

    def _classify(self, state: _Face, pair: tuple[int, int], offset: int | None = None) -> Recognition:
        """Classify an interval from a face's ring (LookupError if its crops have left it): the
        (onset, apex) crops for a flow-image engine, the onset..offset crops for a clip engine."""
        if getattr(self.recognizer, "clip_spec", None) is None:
            onset = np.array(state.ring.get(pair[0])[0])
            apex = np.array(state.ring.get(pair[1])[0])
            result = self.recognizer.classify(onset, apex)
        else:
            last = pair[1] if offset is None else offset
            frames, indices = state.ring.frames_between(pair[0], last, color=self._needs_color)
            if self._needs_color:
                frames = frames[..., ::-1]  # the front end's crops are BGR; clip models take RGB
            apex_at = int(np.searchsorted(indices, pair[1]))
            result = self.recognizer.classify_clip(frames, 0, apex_at, len(indices) - 1, self.fps)
        self._observe("motion", result.motion_s)
        self._observe("inference", result.inference_s)
        return result

    def _prepare(self, state: _Face, pair: tuple[int, int]) -> None:
        """Classify an interval still inside the look-ahead, so that its event need not wait for the
        motion kernels and the engine once it is final (the crops of a frame never change)."""
        if pair in state.prepared:
            return
        try:
            state.prepared[pair] = self._classify(state, pair)
        except LookupError:
            pass  # classified (or counted as lost) when final

    def _forget_speculation(self, state: _Face, interval: SpottedInterval) -> None:
        """Drop what was prepared for bounds this (final) interval has moved past."""
        stale = [pair for pair in state.prepared if pair[1] <= interval.offset]
        for pair in stale:
            del state.prepared[pair]
        self.stats.speculative_misses += len(stale)
        state.speculated = {region for region in state.speculated if region > interval.offset}

    def _observe(self, stage: str, seconds: float) -> None:
        self.stats.stage_seconds[stage] += seconds
        if self.metrics is not None:
            self.metrics.observe_stage(stage, seconds)
