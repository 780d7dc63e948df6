"""Prometheus metrics of a stream, scraped over real HTTP and parsed with prometheus_client's parser."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from engines.errors import MerError
from streamer.metrics import STAGE_LATENCY_BUCKETS, STAGES, StreamMetrics, serve_metrics


def scrape(url):
    """Fetch a /metrics page: sample name -> [(labels, value), ...]."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples, name, **labels):
    matches = [v for sample_labels, v in samples[name] if sample_labels == labels]
    assert len(matches) == 1, f"{name}{labels}: {samples.get(name)}"
    return matches[0]


def test_scraped_metrics_have_the_documented_names_labels_and_values():
    metrics = StreamMetrics("cam0")
    metrics.frames_read(10)
    metrics.frames_read()
    metrics.frame_dropped("queue_full", 2)
    metrics.frame_dropped("decode_error")
    metrics.set_faces_tracked(2)
    metrics.set_ring_buffer_fill(0.75)
    metrics.interval_spotted("micro")
    metrics.interval_spotted("micro")
    metrics.interval_spotted("macro")
    metrics.event_published({"label": "surprise", "latency_ms": 120.0})
    metrics.event_published({"label": "surprise", "latency_ms": 30.0})
    metrics.event_published({"label": "negative", "latency_ms": 700.0})
    metrics.observe_stage("face", 0.0012)
    metrics.observe_stage("face", 0.0003)
    metrics.observe_stage("inference", 0.2)
    with metrics.time_stage("spot"):
        pass
    metrics.set_engine("ststnet@1.2", backend="onnxruntime", device="cpu", precision="fp32")

    with serve_metrics(metrics.registry, port=0) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metrics"
        samples = scrape(server.url)

    stream = {"stream": "cam0"}
    assert value(samples, "mer_frames_read_total", **stream) == 11
    assert value(samples, "mer_frames_dropped_total", reason="queue_full", **stream) == 2
    assert value(samples, "mer_frames_dropped_total", reason="decode_error", **stream) == 1
    assert value(samples, "mer_faces_tracked", **stream) == 2
    assert value(samples, "mer_ring_buffer_fill_ratio", **stream) == 0.75
    assert value(samples, "mer_spotted_intervals_total", kind="micro", **stream) == 2
    assert value(samples, "mer_spotted_intervals_total", kind="macro", **stream) == 1
    assert value(samples, "mer_events_published_total", label="surprise", **stream) == 2
    assert value(samples, "mer_events_published_total", label="negative", **stream) == 1
    assert value(samples, "mer_event_latency_seconds_count", **stream) == 3
    assert value(samples, "mer_event_latency_seconds_sum", **stream) == pytest.approx(0.85)
    assert value(samples, "mer_event_latency_seconds_bucket", le="0.05", **stream) == 1
    assert value(samples, "mer_event_latency_seconds_bucket", le="0.25", **stream) == 2
    assert value(samples, "mer_event_latency_seconds_bucket", le="1.0", **stream) == 3
    assert value(samples, "mer_stage_latency_seconds_count", stage="face", **stream) == 2
    assert value(samples, "mer_stage_latency_seconds_sum", stage="face", **stream) == pytest.approx(0.0015)
    assert value(samples, "mer_stage_latency_seconds_bucket", stage="face", le="0.0005", **stream) == 1
    assert value(samples, "mer_stage_latency_seconds_bucket", stage="face", le="0.0025", **stream) == 2
    assert value(samples, "mer_stage_latency_seconds_count", stage="spot", **stream) == 1
    assert value(samples, "mer_stage_latency_seconds_count", stage="inference", **stream) == 1
    for stage in STAGES:  # every stage is exported from the start
        assert value(samples, "mer_stage_latency_seconds_bucket", stage=stage, le="+Inf", **stream) >= 0
    buckets = {labels["le"] for labels, _ in samples["mer_stage_latency_seconds_bucket"]}
    assert buckets == {repr(float(bound)) for bound in STAGE_LATENCY_BUCKETS} | {"+Inf"}
    assert value(samples, "mer_engine_info", engine="ststnet@1.2", backend="onnxruntime", device="cpu",
                 precision="fp32", **stream) == 1
    assert all(name.startswith("mer_") for name in samples)


def test_two_streams_share_a_registry():
    registry = CollectorRegistry()
    first, second = StreamMetrics("cam0", registry), StreamMetrics("cam1", registry)
    first.frames_read(3)
    second.frames_read(5)
    second.set_faces_tracked(1)
    with serve_metrics(registry=registry, host="127.0.0.1", port=0) as server:
        samples = scrape(server.url)
    assert value(samples, "mer_frames_read_total", stream="cam0") == 3
    assert value(samples, "mer_frames_read_total", stream="cam1") == 5
    assert value(samples, "mer_faces_tracked", stream="cam0") == 0
    assert value(samples, "mer_faces_tracked", stream="cam1") == 1


def test_unknown_stage_kind_and_bad_fill_are_programming_errors():
    metrics = StreamMetrics("cam0")
    with pytest.raises(ValueError, match="unknown stage 'track'"):
        metrics.observe_stage("track", 0.1)
    with pytest.raises(ValueError, match="unknown stage 'track'"):
        with metrics.time_stage("track"):
            pass
    with pytest.raises(ValueError, match="unknown interval kind 'nano'"):
        metrics.interval_spotted("nano")
    with pytest.raises(ValueError, match=r"ring-buffer fill must lie in \[0, 1\]"):
        metrics.set_ring_buffer_fill(1.5)


def test_server_stops_on_close_and_a_busy_port_is_a_clear_error():
    registry = StreamMetrics("cam0").registry
    server = serve_metrics(registry, port=0)
    with pytest.raises(MerError, match=f"cannot serve metrics on 127.0.0.1:{server.port}"):
        serve_metrics(registry, port=server.port)
    server.close()
    with socket.socket() as probe:  # the port is free again
        probe.bind(("127.0.0.1", server.port))
