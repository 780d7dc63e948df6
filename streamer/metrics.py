"""Prometheus metrics of a recognition run, and the HTTP endpoint that serves them.

Every metric is named ``mer_...`` and labelled with the ``stream`` it measures. The
metric families live in one ``CollectorRegistry`` per run (not the process-global
default registry), so tests and several runs in one process never collide;
``StreamMetrics`` binds them to one stream and caches the labelled children, because
the per-frame calls sit on the hot path. docs/metrics.md lists every metric.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from engines.errors import MerError
from streamer.events import KINDS

__all__ = [
    "EVENT_LATENCY_BUCKETS",
    "STAGES",
    "STAGE_LATENCY_BUCKETS",
    "MetricsServer",
    "StreamMetrics",
    "serve_metrics",
]

STAGES = ("decode", "face", "spot", "motion", "inference", "publish")
# Seconds. Stages run from ~50 us (spotting one frame) to ~1 s (a slow model on CPU).
STAGE_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                         1.0, 2.5)
# Seconds from the offset frame's capture to publication; includes the spotter's look-ahead.
EVENT_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class _Families:
    """The metric families registered once in a registry, shared by all streams of that registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.frames_read = Counter("mer_frames_read", "Frames read from the source.", ["stream"],
                                   registry=registry)
        self.frames_dropped = Counter("mer_frames_dropped", "Frames read but not analysed, by reason.",
                                      ["stream", "reason"], registry=registry)
        self.source_reconnects = Counter("mer_source_reconnects", "Times a lost live source (camera, network "
                                         "stream) was reopened.", ["stream"], registry=registry)
        self.source_lost_seconds = Counter("mer_source_lost_seconds", "Seconds without frames while a lost live "
                                           "source was being reopened.", ["stream"], registry=registry)
        self.faces_tracked = Gauge("mer_faces_tracked", "Faces currently tracked.", ["stream"], registry=registry)
        self.ring_buffer_fill = Gauge("mer_ring_buffer_fill_ratio",
                                      "Fill of the fullest per-face ring buffer, 0 (empty) to 1 (full).",
                                      ["stream"], registry=registry)
        self.intervals_spotted = Counter("mer_spotted_intervals", "Expression intervals spotted, by kind.",
                                         ["stream", "kind"], registry=registry)
        self.events_published = Counter("mer_events_published", "Events published, by recognised label.",
                                        ["stream", "label"], registry=registry)
        self.events_dropped = Counter("mer_events_dropped", "Events recognised but not published, by reason "
                                      "(journal_full, journal_error).", ["stream", "reason"], registry=registry)
        self.stage_latency = Histogram("mer_stage_latency_seconds", "Time spent per frame or per event in a "
                                       "pipeline stage.", ["stream", "stage"], buckets=STAGE_LATENCY_BUCKETS,
                                       registry=registry)
        self.event_latency = Histogram("mer_event_latency_seconds", "From the capture of an event's offset "
                                       "frame to its publication.", ["stream"], buckets=EVENT_LATENCY_BUCKETS,
                                       registry=registry)
        self.engine = Info("mer_engine", "The recognition engine and the runtime backend it runs on.",
                           ["stream"], registry=registry)


_families_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()
_families_lock = threading.Lock()


def _families(registry: CollectorRegistry) -> _Families:
    with _families_lock:
        families = _families_by_registry.get(registry)
        if families is None:
            families = _families_by_registry[registry] = _Families(registry)
        return families


class StreamMetrics:
    """The metrics of one stream. ``registry`` defaults to a new one (read it from ``.registry``)."""

    def __init__(self, stream_id: str, registry: CollectorRegistry | None = None) -> None:
        self.stream_id = stream_id
        self.registry = CollectorRegistry() if registry is None else registry
        self._families = families = _families(self.registry)
        self._frames_read = families.frames_read.labels(stream_id)
        self._faces_tracked = families.faces_tracked.labels(stream_id)
        self._source_reconnects = families.source_reconnects.labels(stream_id)
        self._source_lost_seconds = families.source_lost_seconds.labels(stream_id)
        self._ring_buffer_fill = families.ring_buffer_fill.labels(stream_id)
        self._event_latency = families.event_latency.labels(stream_id)
        # Every stage's histogram exists from the start, so dashboards see zeros rather than no series.
        self._stage_latency = {stage: families.stage_latency.labels(stream_id, stage) for stage in STAGES}
        self._dropped: dict[str, Counter] = {}
        self._spotted = {kind: families.intervals_spotted.labels(stream_id, kind) for kind in KINDS}
        self._published: dict[str, Counter] = {}
        self._events_dropped: dict[str, Counter] = {}

    def frames_read(self, count: int = 1) -> None:
        self._frames_read.inc(count)

    def frame_dropped(self, reason: str, count: int = 1) -> None:
        """A frame that was read but not analysed (e.g. ``"queue_full"``, ``"decode_error"``)."""
        child = self._dropped.get(reason)
        if child is None:
            child = self._dropped[reason] = self._families.frames_dropped.labels(self.stream_id, reason)
        child.inc(count)

    def source_reconnected(self, lost_s: float) -> None:
        """A lost live source is back after ``lost_s`` seconds without frames."""
        self._source_reconnects.inc()
        self._source_lost_seconds.inc(lost_s)

    def set_faces_tracked(self, count: int) -> None:
        self._faces_tracked.set(count)

    def set_ring_buffer_fill(self, ratio: float) -> None:
        """Fill of the fullest face ring buffer: frames held / capacity."""
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ring-buffer fill must lie in [0, 1], got {ratio}")
        self._ring_buffer_fill.set(ratio)

    def interval_spotted(self, kind: str) -> None:
        try:
            self._spotted[kind].inc()
        except KeyError:
            raise ValueError(f"unknown interval kind {kind!r}; expected one of {', '.join(KINDS)}") from None

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Record the duration of one pass through ``stage`` (one of ``STAGES``)."""
        try:
            self._stage_latency[stage].observe(seconds)
        except KeyError:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}") from None

    @contextmanager
    def time_stage(self, stage: str) -> Iterator[None]:
        """``with metrics.time_stage("face"): ...`` records the block's duration."""
        if stage not in self._stage_latency:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self._stage_latency[stage].observe(time.perf_counter() - start)

    def event_published(self, event: Mapping[str, Any]) -> None:
        """Count a published ``mer.event/1`` event by label and record its ``latency_ms``."""
        label = event["label"]
        child = self._published.get(label)
        if child is None:
            child = self._published[label] = self._families.events_published.labels(self.stream_id, label)
        child.inc()
        self._event_latency.observe(event["latency_ms"] / 1000.0)

    def event_dropped(self, reason: str) -> None:
        """An event that was recognised but could not be published (e.g. ``"journal_full"``)."""
        child = self._events_dropped.get(reason)
        if child is None:
            child = self._events_dropped[reason] = self._families.events_dropped.labels(self.stream_id, reason)
        child.inc()

    def set_engine(self, engine: str, backend: str, device: str, **details: str) -> None:
        """Describe the engine (``name@version``), its runtime backend and device, plus any details."""
        self._families.engine.labels(self.stream_id).info(
            {"engine": engine, "backend": backend, "device": device, **{k: str(v) for k, v in details.items()}}
        )


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP endpoint; ``close()`` stops it."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9108) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a background thread; port 0 picks a free one."""
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        # No fallback to another port: Prometheus scrapes the configured one, and a stream that
        # quietly moved elsewhere would run unmonitored. Port 0 is the way to ask for any port.
        raise MerError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} (choose another "
                       "--metrics-port or [metrics] port, 0 for any free one, or --no-metrics)") from None
    return MetricsServer(host=host, port=server.server_port, _server=server, _thread=thread)
