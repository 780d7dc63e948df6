"""One long video as overlapping chunks analysed apart, merged into exactly the single pass's output.

A chunk is a span of frames ``[start, stop)``. Every chunk after the first starts
``overlap`` frames before the frame where its share of the video begins (the *border*), so
that by the border its tracker and spotters have the state the single pass has there; the
chunk before runs up to the border. Both compute :func:`~streamer.pipeline_state.state_digest`
on the same frames of that overlap (the *check frames*). The first check frame where the two
digests agree is where the merge hands over: the frames up to it, and the events emitted
while processing them, come from the earlier chunk; everything after it from the later one,
whose state is the single pass's from there on. Track ids are renumbered and event ``seq``
counted afresh, so the merged rows, events and counts are those of the single pass.

Why there must be a check rather than a fixed warm-up: the tracker smooths the alignment
over time and fits landmarks inside the box of the last fit, and the spotter keeps about ten
seconds of signal, a threshold learnt from it and a reference frame; floating-point filters
agree only once their differences have decayed below rounding. (Their periodic work, full
detections, landmark fits and threshold updates, must run on whole intervals of stream time,
not on counts from when a face appeared, so that it falls on the same frames whenever a run
started: see streamer/faces/tracker.py and streamer/spotting/signal.py.) With the default
profiles the digests agree 13-26 s into the overlap (measured, docs/scale-out.md). Where they
never do, the two chunks are analysed again as one (:func:`merge_failed_borders`), so the
output is exact in every case; only the time differs.

An expression that spans a border is spotted by whichever chunk holds the single pass's state
at that moment: a pending interval is part of the state.

Not identical by nature: each event's ``latency_ms`` and ``emitted_at`` (wall-clock readings,
different in any two runs) and the summary's ``seconds``, ``frames_per_s`` and
``stage_seconds`` (timings).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engines.errors import InputError, MerError
from streamer.capture import CaptureCounters, CaptureLoop
from streamer.events import complete_event
from streamer.front_end import frames_in_color
from streamer.outputs import FaceFrameRow
from streamer.pipeline_state import state_digest
from streamer.session import build_pipeline
from streamer.sources import FileSource

__all__ = ["ChunkPlan", "ChunkResult", "MergedVideo", "Span", "analyze_chunk", "check_chunking", "merge_chunks",
           "merge_failed_borders", "plan_chunks", "unsynced_borders"]

END = math.inf  # "emitted by close()", after the last frame


@dataclass(frozen=True)
class Span:
    """Frames ``start <= index < stop`` of one video (``stop`` None: to the end of the file)."""

    start: int
    stop: int | None

    def __str__(self) -> str:
        return f"frames {self.start}-{'end' if self.stop is None else self.stop - 1}"


@dataclass(frozen=True)
class ChunkPlan:
    """The chunks of one video and, per border between two of them, the frames both check."""

    spans: tuple[Span, ...]
    checks: tuple[tuple[int, ...], ...]  # checks[k]: check frames between spans[k] and spans[k + 1]

    def check_frames(self, k: int) -> frozenset[int]:
        """The check frames chunk ``k`` computes digests on: those of the border before it and after it."""
        before = self.checks[k - 1] if k > 0 else ()
        after = self.checks[k] if k < len(self.checks) else ()
        return frozenset(before) | frozenset(after)


def check_chunking(chunk_s: float, overlap_s: float) -> None:
    """Chunks longer than the overlap, so that the overlaps at a chunk's two borders never meet (each
    frame is then analysed at most twice; the overlap's share of the work is ``overlap_s / chunk_s``)."""
    if not overlap_s > 0 or not chunk_s > overlap_s:
        raise InputError(f"--chunk-seconds ({chunk_s:g}) must be longer than --overlap-seconds ({overlap_s:g}), "
                         "which must be positive")


def plan_chunks(frame_count: int, fps: float, *, chunk_s: float, overlap_s: float) -> ChunkPlan:
    """Split ``frame_count`` frames into chunks of about ``chunk_s`` seconds (see the module doc).

    A video shorter than two chunks, or whose length the container does not say (0), is one chunk.
    """
    check_chunking(chunk_s, overlap_s)
    overlap = max(1, round(overlap_s * fps))
    chunk = max(overlap + 1, round(chunk_s * fps))
    count = frame_count // chunk if frame_count > 0 else 1
    if count < 2:
        return ChunkPlan((Span(0, None),), ())
    borders = [k * chunk for k in range(1, count)]
    starts = [0] + [border - overlap for border in borders]
    stops = [*borders, None]
    every = max(1, round(fps))  # one check a second
    lead = overlap // 3  # no chunk can agree before its longest history has filled
    checks = tuple(tuple(sorted({*range(border - overlap + lead, border, every), border - 1})) for border in borders)
    return ChunkPlan(tuple(Span(a, b) for a, b in zip(starts, stops, strict=True)), checks)


class _FileSpan(FileSource):
    """A video file read from the keyframe at or before frame ``start``, its frames numbered and
    timed as a pass from the file's first frame numbers and times them.

    Decoding (and converting) every frame before a chunk would cost a chunk near the end of a
    long video as much as analysing it. Instead, a demux pass (no decoding) collects the
    packets' timestamps; the first frame is decoded (it anchors the stream clock, as in a pass
    from the start); then the reader jumps to the keyframe, whose frame number is the number of
    packets shown before it. Whatever would make a frame's number or time differ from a pass
    from the start (a damaged packet or a timestamp jump before the keyframe, an encoder's
    leading frames) shows in the state digests of the chunk's first frames: the chunk is then
    never handed over to, and it is analysed again from an earlier start.
    """

    REORDER = 64  # packets demuxed past ``start``: more than any decoder's reordering delay

    def __init__(self, path: Path, config, start: int, *, color: bool = True) -> None:
        super().__init__(path, config, color=color)
        self.start = start

    def _decoded(self, first_index: int | None = None):
        if self.start <= 1:
            yield from super()._decoded(first_index)
            return
        jump = self._keyframe_before(self.start)
        self._container.seek(0)  # back to the start after the demux pass
        frames = super()._decoded(first_index)
        if jump is None:  # no timestamps to jump by: decode it all
            yield from frames
            return
        first = next(frames, None)
        frames.close()
        if first is None:
            return
        yield first
        keyframe_pts, keyframe_index = jump
        self._container.seek(keyframe_pts, stream=self._stream, backward=True, any_frame=False)
        yield from super()._decoded((self.first_index if first_index is None else first_index) + keyframe_index)

    def _keyframe_before(self, start: int) -> tuple[int, int] | None:
        """(timestamp, frame number) of the last keyframe shown at or before frame ``start``."""
        shown: list[int] = []
        keyframes: list[int] = []
        for packet in self._container.demux(self._stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            if packet.pts is None:
                return None
            shown.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append(packet.pts)
            if len(shown) > start + self.REORDER:
                break
        shown.sort()
        if len(shown) <= start:
            return None
        candidates = [pts for pts in keyframes if pts <= shown[start]]
        if not candidates:
            return None
        keyframe = max(candidates)
        return keyframe, bisect.bisect_left(shown, keyframe)


@dataclass(frozen=True)
class Checkpoint:
    """The pipeline after one check frame: its digest, live track ids (oldest first) and counts."""

    digest: bytes
    track_ids: tuple[int, ...]
    stats: dict[str, int]


@dataclass
class ChunkResult:
    """Everything one chunk produced; plain data, so it can travel between machines."""

    path: str
    span: Span
    rows: list[FaceFrameRow] = field(default_factory=list)
    events: list[tuple[float, dict]] = field(default_factory=list)  # (frame whose processing emitted it, event)
    drops: list[tuple[str, int]] = field(default_factory=list)  # (reason, frame) of frames never analysed
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)
    end_stats: dict[str, int] = field(default_factory=dict)  # counts after the last frame (and close, if ended)
    last_frame: int = -1  # the last frame processed
    ended: bool = False  # the stream ended in this chunk: end of file, or an error (then ``error``)
    error: str | None = None
    engine: str = ""
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _counts(stats) -> dict[str, int]:
    return {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats) if type(getattr(stats, f.name)) is int}


def analyze_chunk(path: str | Path, span: Span, check_frames: frozenset[int], config, recognizer, *,
                  on_progress: Callable[[int], None] | None = None) -> ChunkResult:
    """Run the pipeline over ``span`` of the video at ``path``; nothing is written to disk.

    Frames are numbered and timed as the whole file's reader numbers and times them (the
    reader jumps to the keyframe before ``span.start``: :class:`_FileSpan`). A ``MerError`` or
    ``OSError`` ends the chunk like the end of the stream (as ``mer analyze`` does on one
    machine); the result says so in ``error``.
    """
    path = Path(path)
    result = ChunkResult(str(path), span, engine=recognizer.engine_id)
    source = _FileSpan(path, config.capture, span.start,
                       color=frames_in_color(config.faces, color_crops=recognizer.needs_color))
    counters = CaptureCounters(on_drop=lambda reason, index: result.drops.append((reason, index)))
    emitted_at: list[float] = [span.start]  # the frame being processed

    def emit(draft: dict) -> dict:
        event = complete_event(draft, seq=len(result.events) + 1)
        result.events.append((emitted_at[0], event))
        return event

    pipeline = build_pipeline(config, stream_id=path.stem, fps=source.fps or 30.0, recognizer=recognizer, emit=emit)
    started = last_report = time.perf_counter()
    processed = 0
    try:
        with CaptureLoop(source, config.capture, counters=counters) as loop:
            for frame in loop:
                if frame.index < span.start:
                    continue
                if span.stop is not None and frame.index >= span.stop:
                    break
                emitted_at[0] = result.last_frame = frame.index
                result.rows.extend(pipeline.process(frame))
                processed += 1
                if frame.index in check_frames:
                    result.checkpoints[frame.index] = Checkpoint(
                        state_digest(pipeline), tuple(pipeline.tracker.track_ids), _counts(pipeline.stats))
                if on_progress is not None and time.perf_counter() - last_report > 1.0:
                    last_report = time.perf_counter()
                    on_progress(processed)
            else:
                result.ended = True
    except (MerError, OSError) as exc:  # the single pass stops here too, keeping what it produced
        result.ended, result.error = True, str(exc)
    if result.ended:
        emitted_at[0] = END
        pipeline.close()
    result.end_stats = _counts(pipeline.stats)
    result.seconds = time.perf_counter() - started
    result.stage_seconds = dict(pipeline.stats.stage_seconds)
    if on_progress is not None:
        on_progress(processed)
    return result


def _sync_frame(before: ChunkResult, after: ChunkResult) -> int | None:
    """The first check frame at which both chunks' pipelines were in the same state."""
    for frame in sorted(set(before.checkpoints) & set(after.checkpoints)):
        if before.checkpoints[frame].digest == after.checkpoints[frame].digest:
            return frame
    return None


def unsynced_borders(results: list[ChunkResult]) -> list[int]:
    """Borders ``k`` (between ``results[k]`` and ``results[k + 1]``) where the two chunks never agreed,
    up to the chunk where the stream ended."""
    failed = []
    for k in range(len(results) - 1):
        if _sync_frame(results[k], results[k + 1]) is None:
            if results[k].ended:
                break  # the stream ended in chunk k: later chunks are not needed
            failed.append(k)
    return failed


def merge_failed_borders(plan: ChunkPlan, failed: list[int]) -> ChunkPlan:
    """The plan with the two chunks on each side of every failed border joined into one."""
    spans, checks = [plan.spans[0]], []
    for k, span in enumerate(plan.spans[1:]):
        if k in failed:
            spans[-1] = Span(spans[-1].start, span.stop)
        else:
            spans.append(span)
            checks.append(plan.checks[k])
    return ChunkPlan(tuple(spans), tuple(checks))


@dataclass
class MergedVideo:
    """The single pass's output, assembled from chunks (see the module doc)."""

    rows: list[FaceFrameRow]
    events: list[dict]
    stats: dict[str, int]
    drops: CaptureCounters  # the frames never analysed, counted as the single pass's capture counts them
    error: str | None
    seconds: float
    stage_seconds: dict[str, float]
    handovers: list[int]  # the frames where one chunk handed over to the next


def merge_chunks(results: list[ChunkResult]) -> MergedVideo:
    """Join chunk results whose borders all agreed (``unsynced_borders`` is empty)."""
    if unsynced_borders(results):
        raise ValueError("chunks that never reached the same state cannot be merged; run them again as one")
    rows: list[FaceFrameRow] = []
    events: list[dict] = []
    drops = CaptureCounters()
    stats: Counter[str] = Counter()
    handovers: list[int] = []
    previous_ids: dict[int, int] = {}  # the chunk before's own track ids -> merged ids
    hand_in = -1  # the last frame taken from the chunk before
    final = results[-1]
    for k, result in enumerate(results):
        if k == 0:
            ids: dict[int, int] = {}
            own_next = next_id = 0
        else:
            before = results[k - 1]
            ids = {own: previous_ids[theirs] for own, theirs in
                   zip(result.checkpoints[hand_in].track_ids, before.checkpoints[hand_in].track_ids, strict=True)}
            own_next = 1 + max((row.face_id for row in result.rows if row.frame <= hand_in), default=-1)
            next_id = 1 + max((row.face_id for row in rows), default=-1)
        hand_out = _sync_frame(result, results[k + 1]) if k + 1 < len(results) else None
        last = END if hand_out is None else hand_out

        def merged_id(own: int) -> int:
            if own < 0:
                return own  # "no face" rows
            if own not in ids:
                if own < own_next:
                    raise AssertionError(f"{result.path} {result.span}: track {own} reappeared after the handover")
                ids[own] = own - own_next + next_id
            return ids[own]

        rows.extend(dataclasses.replace(row, face_id=merged_id(row.face_id)) for row in result.rows
                    if hand_in < row.frame <= last)
        for frame, event in result.events:
            if hand_in < frame <= last:
                events.append({**event, "face": merged_id(event["face"]), "seq": len(events) + 1})
        for reason, frame in result.drops:
            if hand_in < frame <= last:
                drops.drop(reason, frame)
        start_counts = result.checkpoints[hand_in].stats if k > 0 else {}
        end_counts = result.end_stats if hand_out is None else result.checkpoints[hand_out].stats
        stats.update({name: end_counts[name] - start_counts.get(name, 0) for name in end_counts})
        if hand_out is None:
            final = result
            break
        handovers.append(hand_out)
        previous_ids, hand_in = ids, hand_out
    seconds = sum(result.seconds for result in results)
    stage_seconds: Counter[str] = Counter()
    for result in results:
        stage_seconds.update(result.stage_seconds)
    return MergedVideo(rows, events, dict(stats), drops, final.error, seconds, dict(stage_seconds), handovers)
