"""``mer analyze VIDEO|DIR|LIST... [--out DIR] [--ray [ADDRESS]]``: recorded footage, as fast as the machine allows.

Per video, into ``DIR/<video name>/``: ``events.jsonl`` (the same ``mer.event/1`` objects
``mer stream`` publishes, seq from 1 per video), ``frames.csv`` (OpenFace-like per-frame
rows with the spotting signal), ``intervals.csv`` (``video,onset,offset,subject``, what
``mer eval-spot --pred`` reads), ``timeline.png`` and, with ``--video``, ``annotated.mp4``.
A video that fails midway keeps what was written up to the failing frame, and one whose
frames could not all be read (corrupt, cut short) is analysed as far as it can be read; either
counts as failed, named in a one-line message with its frames, and the run goes on with the
next file; the exit status says how many failed.

The inputs are video files, folders (every video in them, sorted by name) and list files
(``.txt``: one video path per line, relative to the list's folder; ``#`` starts a comment).
With ``--ray`` the videos are analysed on a Ray cluster, one task per video and long videos
in overlapping chunks, with the same outputs (``streamer/distributed.py``, docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from contextlib import ExitStack, closing
from pathlib import Path

from tqdm import tqdm

from engines.errors import InputError, MerError
from streamer.capture import CaptureCounters, CaptureLoop
from streamer.events import complete_event
from streamer.front_end import frames_in_color
from streamer.front_end_worker import FrontEndWorker, WorkerUnavailable
from streamer.outputs import AnnotatedVideoWriter, FrameCsvWriter, write_intervals_csv, write_timeline_png
from streamer.session import build_pipeline, open_recognizer
from streamer.sources import FileSource
from streamer.stream_config import load_stream_config

log = logging.getLogger(__name__)

CHUNK_S, OVERLAP_S = 600.0, 40.0  # --ray: chunks of 10 min, each starting 40 s early (docs/scale-out.md)
# --front-end-process auto: a worker costs about 2 s to start (once per run) and saves 13-33 % of each
# frame's time on 2 cores (docs/benchmarks.md); below this length one process is about as fast.
SPLIT_MIN_S = 20.0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("analyze", help="spot and classify micro-expressions in video files",
                                   description=__doc__.split("\n\n")[0])
    # "*", not "+": in ``--ray VIDEO`` argparse hands the video to --ray, and run_analyze gives it back
    parser.add_argument("files", nargs="*", type=Path, metavar="VIDEO|DIR|LIST",
                        help="video files, folders of videos, or .txt lists of video paths")
    parser.add_argument("--out", type=Path, default=Path("runs/analyze"), help="output folder (default: runs/analyze)")
    parser.add_argument("--config", type=Path, help="stream profile TOML (default: configs/stream/default.toml)")
    parser.add_argument("--engine", type=Path, help="engine directory (default: the profile's, else the shipped one)")
    parser.add_argument("--video", action="store_true", help="also write an annotated video (stores the faces)")
    parser.add_argument("--subject", default="", help="subject column of intervals.csv")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--front-end-process", choices=("auto", "on", "off"), default="auto",
                        help="decode and track faces in a second process, the rest in this one (auto: on a machine "
                        f"with 2 or more cores, for videos of {SPLIT_MIN_S:g} s or more; never with --video)")
    scale = parser.add_argument_group("scale-out on Ray (pip install 'mer[ray]'; docs/scale-out.md)")
    scale.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="analyse on a Ray cluster: its address (host:port, ray://host:port, auto), "
                       "or none to start one on this machine")
    scale.add_argument("--chunk-seconds", type=float,
                       help="with --ray: split videos longer than two chunks into chunks of about this long "
                       f"(default: {CHUNK_S:g})")
    scale.add_argument("--overlap-seconds", type=float,
                       help="with --ray: each chunk starts this much earlier, to reach the single pass's "
                       f"state by its border (default: {OVERLAP_S:g})")
    parser.set_defaults(run=run_analyze)


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
LIST_SUFFIXES = (".txt", ".list")


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """The videos named by ``inputs``: files as given, folders' videos by name, list files' lines.

    Raises ``InputError`` naming the first input that does not exist, a list line naming a
    missing file, or two videos that would write to the same output folder.
    """
    videos: list[Path] = []
    for item in inputs:
        if item.is_dir():
            videos += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        elif item.is_file() and item.suffix.lower() in LIST_SUFFIXES:
            for number, line in enumerate(item.read_text(encoding="utf-8").splitlines(), start=1):
                entry = line.split("#", 1)[0].strip()
                if entry:
                    video = item.parent / entry
                    if not video.is_file():
                        raise InputError(f"no such video file: {video}", path=item, row=number)
                    videos.append(video)
        elif item.is_file():
            videos.append(item)
        else:
            raise InputError("no such video file, folder or list", path=item)
    owners: dict[str, Path] = {}
    unique: list[Path] = []
    for video in videos:
        owner = owners.setdefault(video.stem, video)
        if owner.resolve() == video.resolve():
            if owner is not video:
                log.info("%s is named twice (as %s and %s); it is analysed once", video.resolve(), owner, video)
                continue
            unique.append(video)
        else:
            raise InputError(f"{owner} and {video} would both write to <out>/{video.stem}/: "
                             "rename one or analyse them in two runs", path=video)
    return unique


class _JsonlEvents:
    """Completes each draft with a per-video seq and appends it to events.jsonl."""

    def __init__(self, path: Path) -> None:
        self.events: list[dict] = []
        self._handle = open(path, "w", encoding="utf-8")

    def __call__(self, draft: dict) -> dict:
        event = complete_event(draft, seq=len(self.events) + 1)
        self._handle.write(event_line(event))
        self._handle.flush()
        self.events.append(event)
        return event

    def close(self) -> None:
        self._handle.close()


def event_line(event: dict) -> str:
    """One line of events.jsonl."""
    return json.dumps(event, separators=(",", ":")) + "\n"


def video_summary(path: Path, counts: dict, frames_dropped: dict, seconds: float, stage_seconds: dict, engine: str,
                  error: str | None) -> dict:
    """summary.json of one video, from the pipeline's counts and the run's timings."""
    return {
        "file": str(path),
        "frames": counts["frames"],
        "frames_with_faces": counts["frames_with_faces"],
        "events": counts["events"],
        "intervals_lost": counts["intervals_lost"],
        "speculative_hits": counts["speculative_hits"],
        "speculative_misses": counts["speculative_misses"],
        "frames_dropped": frames_dropped,
        "seconds": round(seconds, 3),
        "frames_per_s": round(counts["frames"] / seconds, 1) if seconds > 0 else None,
        "stage_seconds": {k: round(v, 4) for k, v in stage_seconds.items()},
        "engine": engine,
        "error": error,
    }


def write_video_results(out_dir: Path, path: Path, events: list[dict], signals: list[tuple[int, float, float]],
                        summary: dict, subject: str = "") -> None:
    """What is written once a video is done: intervals.csv, timeline.png and summary.json."""
    write_intervals_csv(out_dir / "intervals.csv", path.stem, events, subject)
    write_timeline_png(out_dir / "timeline.png", f"{path.name}: spotting signal and events", signals, events)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def analyze_file(path: Path, out_dir: Path, config, recognizer, *, video: bool = False, subject: str = "",
                 progress: bool = True, front_end: FrontEndWorker | None = None) -> dict:
    """Analyse one file into ``out_dir``; returns a summary (frames, events, seconds, rates).

    With ``front_end`` (not with ``video``, which draws on the frames) the file is decoded and
    its faces tracked in that worker process, the rest here: the same outputs on two cores.
    """
    # An unreadable file fails here, before any output exists.
    feed = None
    if front_end is not None and not video:
        try:
            feed = front_end.open(path, config, keep_color=recognizer.needs_color)
        except WorkerUnavailable as exc:  # same outputs in one process, only slower
            log.warning("%s: %s; analysing it in this process", path, exc)
    if feed is None:  # grey frames unless colour is drawn on or classified (the worker decides the same)
        source = FileSource(path, config.capture,
                            color=frames_in_color(config.faces, color_crops=recognizer.needs_color or video))
    else:
        source = feed
    out_dir.mkdir(parents=True, exist_ok=True)
    fps = source.fps or 30.0
    counters = CaptureCounters()
    events = _JsonlEvents(out_dir / "events.jsonl")
    pipeline = build_pipeline(config, stream_id=path.stem, fps=fps, recognizer=recognizer, emit=events,
                              tracker=None if feed is None else feed.tracker)
    frame_csv = FrameCsvWriter(out_dir / "frames.csv")
    annotated = AnnotatedVideoWriter(out_dir / "annotated.mp4", fps, source.size) if video else None
    signals: list[tuple[int, float, float]] = []  # (face, t, signal) for the timeline; not the landmarks
    bar = tqdm(total=source.frame_count or None, desc=path.name, unit="frame", disable=not progress)
    started = time.perf_counter()
    failure: Exception | None = None
    last_index: int | None = None  # the last frame analysed
    try:
        with CaptureLoop(source, config.capture, counters=counters) if feed is None else closing(feed) as loop:
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
    if feed is not None:
        counters = feed.counters
    if failure is None and counters.frames_dropped:  # every readable frame was analysed, but not every frame
        failure = InputError(counters.describe_drops())
    elapsed = time.perf_counter() - started
    summary = video_summary(path, vars(pipeline.stats), counters.snapshot().get("frames_dropped", {}),
                            elapsed, pipeline.stats.stage_seconds, recognizer.engine_id,
                            None if failure is None else str(failure))
    write_video_results(out_dir, path, events.events, signals, summary, subject)
    if failure is not None:
        raise _stopped(path, failure, pipeline.stats.frames, last_index, out_dir)
    return summary


def _stopped(path: Path, failure: Exception | str, frames: int, last_index: int | None, out_dir: Path) -> MerError:
    """The error of a video that was not analysed in full, saying what was kept."""
    analysed = "no frame" if last_index is None else f"{frames} frames, the last frame {last_index},"
    return MerError(f"{path}: {failure} ({analysed} analysed; results kept in {out_dir})")


def write_merged_video(out_dir: Path, path: Path, merged, engine: str, subject: str = "") -> dict:
    """Write a video analysed in chunks (``streamer.chunks.MergedVideo``) as ``analyze_file`` writes it,
    and fail as it fails: ``MerError`` when the video was not analysed in full."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "events.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(event_line(event) for event in merged.events)
    frame_csv = FrameCsvWriter(out_dir / "frames.csv")
    for row in merged.rows:
        frame_csv.write(row)
    frame_csv.close()
    signals = [(row.face_id, row.t, row.signal) for row in merged.rows if row.signal is not None]
    failure = merged.error
    if failure is None and merged.drops.frames_dropped:
        failure = str(InputError(merged.drops.describe_drops()))
    summary = video_summary(path, merged.stats, merged.drops.snapshot().get("frames_dropped", {}), merged.seconds,
                            merged.stage_seconds, engine, failure)
    write_video_results(out_dir, path, merged.events, signals, summary, subject)
    if failure is not None:
        raise _stopped(path, failure, summary["frames"], merged.rows[-1].frame if merged.rows else None, out_dir)
    return summary


_ADDRESS = re.compile(r"^(auto|local|[a-z]+://\S+|[\w.\-]+:\d+)$")


def _ray_address(args: argparse.Namespace) -> str | None:
    """``--ray``'s address; a value that is no address but an existing path was an input (``--ray DIR``)."""
    value = args.ray
    if value is None or _ADDRESS.match(value):
        return value
    if Path(value).exists():
        args.files.insert(0, Path(value))
        return "local"
    raise InputError(f"--ray {value}: neither a Ray address (host:port, ray://host:port, auto) nor an existing video, "
                     "folder or list")


def run_analyze(args: argparse.Namespace) -> int:
    address = _ray_address(args)
    if address is None and (args.chunk_seconds is not None or args.overlap_seconds is not None):
        raise InputError("--chunk-seconds and --overlap-seconds split videos for --ray; without it a video is one pass")
    if address is not None:
        if args.video:
            raise InputError("--video is not available with --ray: the annotated video is drawn in one pass "
                             "over the whole file; analyse those videos without --ray")
        from streamer.distributed import analyze_on_ray  # says which extra to install when Ray is missing
    if not args.files:
        raise InputError("name at least one video file, folder of videos or list of videos")
    config = load_stream_config(args.config)
    # A file is analysed once, whatever the profile says about looping (that is for ``mer stream``).
    config = config.model_copy(update={"capture": config.capture.model_copy(update={"loop": False})})
    videos = expand_inputs(args.files)
    if not videos:
        raise InputError("no video found in " + ", ".join(map(str, args.files)))
    if address is not None:
        failed = analyze_on_ray(videos, args.out, config, args.engine, address=None if address == "local" else address,
                                chunk_s=CHUNK_S if args.chunk_seconds is None else args.chunk_seconds,
                                overlap_s=OVERLAP_S if args.overlap_seconds is None else args.overlap_seconds,
                                subject=args.subject, progress=not args.no_progress)
    else:
        recognizer = open_recognizer(config, args.engine)
        failed = 0
        with ExitStack() as cleanup:
            worker = None
            for path in videos:
                if worker is None and _split(args.front_end_process, path, args.video):
                    worker = cleanup.enter_context(FrontEndWorker())
                try:
                    summary = analyze_file(path, args.out / path.stem, config, recognizer, video=args.video,
                                           subject=args.subject, progress=not args.no_progress,
                                           front_end=worker)
                except MerError as exc:
                    failed += 1
                    log.error("%s", exc)
                    continue
                report_video(path, summary, args.out)
    if failed:
        raise MerError(f"{failed} of {len(videos)} videos failed (see the messages above)")
    return 0


def _split(choice: str, path: Path, video: bool) -> bool:
    """Whether ``--front-end-process`` asks for the worker process for this video."""
    if choice == "off" or video:
        return False
    if choice == "on":
        return True
    if (os.cpu_count() or 1) < 2:
        return False
    try:
        with closing(FileSource(path)) as source:
            return (source.frame_count or 0) >= SPLIT_MIN_S * (source.fps or 30.0)
    except (MerError, OSError):
        return False  # analyze_file reports it


def report_video(path: Path, summary: dict, out: Path) -> None:
    """The line printed for each video analysed."""
    print(f"{path}: {summary['frames']} frames, {summary['events']} events, "
          f"{summary['frames_per_s']} frames/s -> {out / path.stem}")
