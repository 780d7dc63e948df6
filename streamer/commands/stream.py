"""``mer stream --source 0|FILE|URL``: live recognition, events on ZeroMQ, metrics on Prometheus.

Runs until the source ends (a file) or the process is stopped: Ctrl-C or SIGTERM stop the
capture, flush every face's pending intervals, publish their events and close the
journal and the sockets, so nothing that was spotted is lost on a clean shutdown; the exit
status is then 0, as for a file that ended (a stop that was asked for is not a failure).

A bad profile or engine, or a port or journal that cannot be had, stops it before any socket
is bound or frame read. An event the journal cannot take (a full disk) is counted, not
published, and the stream goes on; the run then ends with a non-zero status naming the loss.
docs/reliability.md has each fault and what happens.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from contextlib import ExitStack
from pathlib import Path

from engines.errors import InputError, MerError
from streamer.capture import CaptureCounters, CaptureLoop
from streamer.event_transport import CurveServerKeys, check_exposure
from streamer.metrics import StreamMetrics, serve_metrics
from streamer.publisher import EventPublisher
from streamer.front_end import build_tracker, frames_in_color
from streamer.session import build_pipeline, load_spot_profile, open_recognizer
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
    parser.add_argument("--curve-secret-key", type=Path, metavar="FILE",
                        help="the server's CURVE certificate (.key_secret from `mer keys server`): encrypt events")
    parser.add_argument("--curve-authorized-clients", type=Path, metavar="DIR",
                        help="folder of subscriber public keys (*.key) let in (default: any holder of the server key)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow an endpoint other hosts can reach without CURVE (events in clear text)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (default 9108; 0 = any free port)")
    parser.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    parser.add_argument("--realtime", action="store_true",
                        help="play a video file at its own pace, like a camera (frames may then be dropped)")
    parser.add_argument("--loop", action="store_true",
                        help="play a video file again from the start whenever it ends (soak tests, demos)")
    parser.set_defaults(run=run_stream)


def stream_name(source: str) -> str:
    """A topic-safe default stream id: the file stem, ``camera0``, or the URL's host and path."""
    if source.isdigit():
        return f"camera{source}"
    if "://" in source:
        rest = source.split("://", 1)[1]
        return "".join(ch if ch.isalnum() else "-" for ch in rest).strip("-") or "network"
    return Path(source).stem or "stream"


def _opened(loop: CaptureLoop, stop_requested: threading.Event) -> bool:
    """Open the source; False when a stop was asked for first, or while it was opening (a signal
    interrupts a network source that is slow to answer: that is the stop, not a failure)."""
    if stop_requested.is_set():
        return False
    try:
        loop.start()
    except MerError:
        if not stop_requested.is_set():
            raise
        log.info("stopped while opening the source")
        return False
    return True


def _curve_keys(secret_key: Path | None, authorized_clients: Path | None) -> CurveServerKeys | None:
    if secret_key is None:
        if authorized_clients is not None:
            raise InputError("--curve-authorized-clients needs --curve-secret-key")
        return None
    return CurveServerKeys(secret_key, authorized_clients)


def run_stream(args: argparse.Namespace) -> int:
    config = load_stream_config(args.config)
    capture = {"file_playback": "realtime"} if args.realtime else {}
    if args.loop:
        capture["loop"] = True
    if capture:
        config = config.model_copy(update={"capture": config.capture.model_copy(update=capture)})
    events_cfg = config.events
    stream_id = args.stream_id or config.stream_id or stream_name(args.source)
    endpoint = args.endpoint or events_cfg.endpoint
    replay_endpoint = args.replay_endpoint or events_cfg.replay_endpoint
    curve = _curve_keys(args.curve_secret_key or events_cfg.curve_secret_key,
                        args.curve_authorized_clients or events_cfg.curve_authorized_clients)
    insecure = args.insecure or events_cfg.insecure
    for exposed in (endpoint, replay_endpoint):  # refused before the engine loads, not after
        if exposed is not None:
            check_exposure(exposed, curve, insecure=insecure)
    # Refusals come before anything is bound, created or read: the profiles, then the engine,
    # which is loaded and test-run here, then the landmark models; then each resource in turn,
    # every one closed again if a later one fails (the ExitStack).
    spot_params = load_spot_profile(config)
    recognizer = open_recognizer(config, args.engine)
    # The face front end loads its models here (about 1 s for dlib's): a missing model is refused
    # before anything is bound, and a live source's first frames are not dropped while they load.
    tracker = build_tracker(config.faces)
    metrics = StreamMetrics(stream_id)
    counters = CaptureCounters(on_read=lambda frame: metrics.frames_read(),
                               on_drop=lambda reason, index: metrics.frame_dropped(reason),
                               on_gap=metrics.source_reconnected)
    loop = CaptureLoop(args.source, config.capture, counters=counters,  # opens nothing until start()
                       color=frames_in_color(config.faces, color_crops=recognizer.needs_color))
    stop_requested = threading.Event()

    def request_stop(signum, _frame) -> None:
        log.info("signal %d: stopping after the current frame", signum)
        stop_requested.set()
        loop.stop(timeout=0)

    pipeline = None
    with ExitStack() as resources:
        for sig in (signal.SIGINT, signal.SIGTERM):
            resources.callback(signal.signal, sig, signal.signal(sig, request_stop))  # restored last
        if not args.no_metrics and config.metrics.enabled:
            port = config.metrics.port if args.metrics_port is None else args.metrics_port
            server = resources.enter_context(serve_metrics(metrics.registry, config.metrics.host, port))
            log.info("metrics on %s", server.url)
        publisher = resources.enter_context(
            EventPublisher(endpoint, replay_endpoint, args.journal or events_cfg.journal, curve=curve,
                           insecure=insecure, on_drop=metrics.event_dropped))
        try:
            if _opened(loop, stop_requested):
                fps = loop.source.fps or config.capture.camera.fps or 30.0
                pipeline = build_pipeline(config, stream_id=stream_id, fps=fps, recognizer=recognizer,
                                          emit=publisher.publish, metrics=metrics, spot_params=spot_params,
                                          tracker=tracker)
                log.info("stream %s: %s at %.1f fps, engine %s (%s), events on %s", stream_id, loop.source.name,
                         fps, recognizer.engine_id, recognizer.backend, publisher.endpoint)
                for frame in loop:
                    pipeline.process(frame)
                    if stop_requested.is_set():
                        break
        finally:
            loop.stop()
            if pipeline is not None:
                pipeline.close()  # flush pending intervals: their events are published before we exit
        # Leaving the block closes the publisher (its last events get the socket's linger to go
        # out, the journal is closed), then the metrics endpoint, then restores the signal handlers.
    if pipeline is not None:
        stats = pipeline.stats
        print(f"stream {stream_id}: {stats.frames} frames, {stats.events} events "
              f"(last seq {publisher.last_seq}), dropped {dict(counters.frames_dropped)} of {counters.frames_read} read")
    else:
        print(f"stream {stream_id}: stopped before {args.source} opened (last seq {publisher.last_seq})")
    if publisher.dropped:
        print(f"stream {stream_id}: events not published {dict(publisher.dropped)}")
        raise MerError(f"{sum(publisher.dropped.values())} events were recognised but not published: "
                       f"{publisher.last_drop}")
    return 0
