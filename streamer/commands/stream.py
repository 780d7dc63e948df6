"""``mer stream --source 0|FILE|URL``: live recognition, events on ZeroMQ, metrics on Prometheus.

Runs until the source ends (a file) or the process is stopped: Ctrl-C or SIGTERM stop the
capture, flush every face's pending intervals, publish their events and close the
journal, so nothing that was spotted is lost on a clean shutdown.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from streamer.capture import CaptureCounters, CaptureLoop
from streamer.metrics import StreamMetrics, serve_metrics
from streamer.publisher import EventPublisher
from streamer.session import build_pipeline, open_recognizer
from streamer.stream_config import load_stream_config

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("stream", help="recognise micro-expressions live and publish events",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="webcam index (0), video file, or URL (rtsp/udp/http/tcp)")
    parser.add_argument("--config", type=Path, help="stream profile TOML (default: configs/stream/default.toml)")
    parser.add_argument("--engine", type=Path, help="engine directory (default: the profile's, else the shipped one)")
    parser.add_argument("--stream-id", help="name of this stream in topics, events and metrics (default: from the source)")
    parser.add_argument("--endpoint", help="ZeroMQ PUB endpoint (default: the profile's, tcp://127.0.0.1:5556)")
    parser.add_argument("--replay-endpoint", help="ZeroMQ REP endpoint for replays (default: tcp://127.0.0.1:5557)")
    parser.add_argument("--journal", type=Path, help="event journal file (default: the profile's)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (default 9108; 0 = any free port)")
    parser.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    parser.add_argument("--realtime", action="store_true",
                        help="play a video file at its own pace, like a camera (frames may then be dropped)")
    parser.set_defaults(run=run_stream)


def stream_name(source: str) -> str:
    """A topic-safe default stream id: the file stem, ``camera0``, or the URL's host and path."""
    if source.isdigit():
        return f"camera{source}"
    if "://" in source:
        rest = source.split("://", 1)[1]
        return "".join(ch if ch.isalnum() else "-" for ch in rest).strip("-") or "network"
    return Path(source).stem or "stream"


def run_stream(args: argparse.Namespace) -> int:
    config = load_stream_config(args.config)
    if args.realtime:
        config = config.model_copy(update={"capture": config.capture.model_copy(update={"file_playback": "realtime"})})
    events_cfg = config.events
    stream_id = args.stream_id or config.stream_id or stream_name(args.source)
    recognizer = open_recognizer(config, args.engine)
    metrics = StreamMetrics(stream_id)
    server = None
    if not args.no_metrics and config.metrics.enabled:
        port = config.metrics.port if args.metrics_port is None else args.metrics_port
        server = serve_metrics(metrics.registry, config.metrics.host, port)
        log.info("metrics on %s", server.url)
    publisher = EventPublisher(args.endpoint or events_cfg.endpoint,
                               args.replay_endpoint or events_cfg.replay_endpoint,
                               args.journal or events_cfg.journal)
    counters = CaptureCounters(on_read=lambda frame: metrics.frames_read(),
                               on_drop=lambda reason, index: metrics.frame_dropped(reason))
    loop = CaptureLoop(args.source, config.capture, counters=counters)
    stop_requested = threading.Event()

    def request_stop(signum, _frame) -> None:
        log.info("signal %d: stopping after the current frame", signum)
        stop_requested.set()
        loop.stop(timeout=0)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    pipeline = None
    try:
        loop.start()
        fps = loop.source.fps or config.capture.camera.fps or 30.0
        pipeline = build_pipeline(config, stream_id=stream_id, fps=fps, recognizer=recognizer,
                                  emit=publisher.publish, metrics=metrics)
        log.info("stream %s: %s at %.1f fps, engine %s (%s), events on %s", stream_id, loop.source.name, fps,
                 recognizer.engine_id, recognizer.backend, publisher.endpoint)
        for frame in loop:
            pipeline.process(frame)
            if stop_requested.is_set():
                break
    finally:
        loop.stop()
        if pipeline is not None:
            pipeline.close()  # flush pending intervals: their events are published before we exit
        publisher.close()
        if server is not None:
            server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = pipeline.stats if pipeline is not None else None
    if stats is not None:
        print(f"stream {stream_id}: {stats.frames} frames, {stats.events} events "
              f"(last seq {publisher.last_seq}), dropped {dict(counters.frames_dropped)}")
    return 0
