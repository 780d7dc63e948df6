"""``mer analyze FILE... [--out DIR]``: recorded footage, as fast as the machine allows.

Per video, into ``DIR/<video name>/``: ``events.jsonl`` (the same ``mer.event/1`` objects
``mer stream`` publishes, seq from 1 per video), ``frames.csv`` (OpenFace-like per-frame
rows with the spotting signal), ``intervals.csv`` (``video,onset,offset,subject``, what
``mer eval-spot --pred`` reads), ``timeline.png`` and, with ``--video``, ``annotated.mp4``.
A video that fails midway keeps what was written up to the failing frame, and one whose
frames could not all be read (corrupt, cut short) is analysed as far as it can be read; either
counts as failed, named in a one-line message with the frame, and the run goes on with the next
file; the exit status says how many failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from tqdm import tqdm

from engines.errors import InputError, MerError
from streamer.capture import CaptureCounters, CaptureLoop
from streamer.events import complete_event
from streamer.outputs import AnnotatedVideoWriter, FrameCsvWriter, write_intervals_csv, write_timeline_png
from streamer.session import build_pipeline, load_spot_profile, open_recognizer
from streamer.sources import FileSource
from streamer.stream_config import load_stream_config

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("analyze", help="spot and classify micro-expressions in video files",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="video files")
    parser.add_argument("--out", type=Path, default=Path("runs/analyze"), help="output folder (default: runs/analyze)")
    parser.add_argument("--config", type=Path, help="stream profile TOML (default: configs/stream/default.toml)")
    parser.add_argument("--engine", type=Path, help="engine directory (default: the profile's, else the shipped one)")
    parser.add_argument("--video", action="store_true", help="also write an annotated video (stores the faces)")
    parser.add_argument("--subject", default="", help="subject column of intervals.csv")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_analyze)


class _JsonlEvents:
    """Completes each draft with a per-video seq and appends it to events.jsonl."""

    def __init__(self, path: Path) -> None:
        self.events: list[dict] = []
        self._handle = open(path, "w", encoding="utf-8")

    def __call__(self, draft: dict) -> dict:
        event = complete_event(draft, seq=len(self.events) + 1)
        self._handle.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._handle.flush()
        self.events.append(event)
        return event

    def close(self) -> None:
        self._handle.close()


def analyze_file(path: Path, out_dir: Path, config, recognizer, *, video: bool = False, subject: str = "",
                 progress: bool = True, spot_params=None) -> dict:
    """Analyse one file into ``out_dir``; returns a summary (frames, events, seconds, rates)."""
    capture = config.capture.model_copy(update={"loop": False})  # a file is analysed once, looping profile or not
    source = FileSource(path, capture)  # an unreadable file fails here, before any output exists
    out_dir.mkdir(parents=True, exist_ok=True)
    fps = source.fps or 30.0
    counters = CaptureCounters()
    events = _JsonlEvents(out_dir / "events.jsonl")
    pipeline = build_pipeline(config, stream_id=path.stem, fps=fps, recognizer=recognizer, emit=events,
                              spot_params=spot_params)
    frame_csv = FrameCsvWriter(out_dir / "frames.csv")
    annotated = AnnotatedVideoWriter(out_dir / "annotated.mp4", fps, source.size) if video else None
    signals: list[tuple[int, float, float]] = []  # (face, t, signal) for the timeline; not the landmarks
    bar = tqdm(total=source.frame_count or None, desc=path.name, unit="frame", disable=not progress)
    started = time.perf_counter()
    failure: Exception | None = None
    last_index: int | None = None  # the last frame analysed
    try:
        with CaptureLoop(source, capture, counters=counters) as loop:
            for frame in loop:
                shown = len(events.events)
                rows = pipeline.process(frame)
                for row in rows:
                    frame_csv.write(row)
                signals.extend((row.face_id, row.t, row.signal) for row in rows if row.signal is not None)
                if annotated is not None:
                    for event in events.events[shown:]:
                        annotated.show_event(event)
                    annotated.write(frame.image, frame.t, rows)
                last_index = frame.index
                bar.update()
    except (MerError, OSError) as exc:  # keep what was produced; the caller reports the failure
        failure = exc
    finally:
        pipeline.close()
        bar.close()
        frame_csv.close()
        events.close()
        if annotated is not None:
            annotated.close()
    if failure is None and counters.frames_dropped:  # every readable frame was analysed, but not every frame
        failure = InputError(counters.describe_drops())
    elapsed = time.perf_counter() - started
    write_intervals_csv(out_dir / "intervals.csv", path.stem, events.events, subject)
    write_timeline_png(out_dir / "timeline.png", f"{path.name}: spotting signal and events", signals,
                       events.events)
    summary = {
        "file": str(path),
        "frames": pipeline.stats.frames,
        "frames_with_faces": pipeline.stats.frames_with_faces,
        "events": len(events.events),
        "intervals_lost": pipeline.stats.intervals_lost,
        "speculative_hits": pipeline.stats.speculative_hits,
        "speculative_misses": pipeline.stats.speculative_misses,
        "frames_dropped": counters.snapshot().get("frames_dropped", {}),
        "seconds": round(elapsed, 3),
        "frames_per_s": round(pipeline.stats.frames / elapsed, 1) if elapsed > 0 else None,
        "stage_seconds": {k: round(v, 4) for k, v in pipeline.stats.stage_seconds.items()},
        "engine": recognizer.engine_id,
        "error": None if failure is None else str(failure),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if failure is not None:
        analysed = "no frame" if last_index is None else f"{pipeline.stats.frames} frames, the last frame {last_index},"
        raise MerError(f"{path}: {failure} ({analysed} analysed; results kept in {out_dir})")
    return summary


def run_analyze(args: argparse.Namespace) -> int:
    config = load_stream_config(args.config)
    spot_params = load_spot_profile(config)  # a bad spotting profile is a config error, before any output
    missing = [path for path in args.files if not path.is_file()]
    if missing:
        raise InputError("no such video file", path=missing[0])
    recognizer = open_recognizer(config, args.engine)
    failed = 0
    for path in args.files:
        try:
            summary = analyze_file(path, args.out / path.stem, config, recognizer, video=args.video,
                                   subject=args.subject, progress=not args.no_progress,
                                   spot_params=spot_params)
        except MerError as exc:
            failed += 1
            log.error("%s", exc)
            continue
        print(f"{path}: {summary['frames']} frames, {summary['events']} events, "
              f"{summary['frames_per_s']} frames/s -> {args.out / path.stem}")
    if failed:
        raise MerError(f"{failed} of {len(args.files)} videos failed (see the messages above)")
    return 0
