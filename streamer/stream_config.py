"""Schema of a stream profile (``configs/stream/*.toml``): how ``mer stream`` runs.

One ``ConfigModel`` class per TOML table, so every section of the profile is validated
on load and a typo names its file and dotted key (see ``engines.config``). The face
front end's section (``FacesConfig``) lives with it in ``streamer.front_end``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from engines.config import ConfigModel, load_config
from streamer.event_transport import DEFAULT_ENDPOINT, DEFAULT_REPLAY_ENDPOINT
from streamer.front_end import FacesConfig

__all__ = [
    "DEFAULT_STREAM_CONFIG",
    "CameraConfig",
    "CaptureConfig",
    "NetworkConfig",
    "ReconnectConfig",
    "EngineConfig",
    "EventsConfig",
    "MetricsConfig",
    "SpotConfig",
    "StreamConfig",
    "load_stream_config",
    "spot_profile_path",
]

DEFAULT_STREAM_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "stream" / "default.toml"
SPOT_PROFILE_DIR = Path(__file__).resolve().parents[1] / "configs" / "spot"


class ReconnectConfig(ConfigModel):
    """``[capture.reconnect]``: how a lost live source is reopened (exponential backoff)."""

    initial_delay_s: float = Field(0.5, gt=0)  # wait before the first reopen attempt
    max_delay_s: float = Field(10.0, gt=0)  # the doubling delay stops growing here
    max_attempts: int = Field(0, ge=0)  # failed reopen attempts in a row before giving up; 0 = forever

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> ReconnectConfig:
        if self.max_delay_s < self.initial_delay_s:
            raise ValueError(f"max_delay_s ({self.max_delay_s}) must be >= initial_delay_s ({self.initial_delay_s})")
        return self


class NetworkConfig(ConfigModel):
    """``[capture.network]``: network URLs (rtsp, udp, http(s), tcp, ...) opened with PyAV/FFmpeg."""

    open_timeout_s: float = Field(10.0, gt=0)  # connect + probe; a silent source fails after this
    read_timeout_s: float = Field(5.0, gt=0)  # no data for this long = the source is lost
    # FFmpeg protocol/demuxer options passed to av.open, e.g. {rtsp_transport = "tcp"}.
    options: dict[str, str] = Field(default_factory=dict)


class CameraConfig(ConfigModel):
    """``[capture.camera]``: webcams opened with cv2.VideoCapture; 0 keeps the driver's default."""

    width: int = Field(0, ge=0)
    height: int = Field(0, ge=0)
    fps: float = Field(0.0, ge=0)


class CaptureConfig(ConfigModel):
    """``[capture]``: reading frames from a source into the bounded queue the pipeline consumes."""

    queue_size: int = Field(8, ge=1)  # frames between capture and processing
    # Live sources never wait for processing: when the queue is full the oldest queued frame
    # (drop_oldest: stay current) or the new frame (drop_newest: keep continuity) is dropped.
    drop_policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    # Files: "fast" decodes every frame as fast as the consumer takes them (never drops);
    # "realtime" paces them at their timestamps and treats the file like a live source.
    file_playback: Literal["fast", "realtime"] = "fast"
    # Files: start again from the beginning at the end (an endless stream for soak tests and
    # demos); t and the frame numbers keep increasing, and faces are tracked afresh each pass.
    loop: bool = False
    # PyAV decoder threading: AUTO (frame+slice, fastest), SLICE (lowest latency), FRAME, NONE.
    decode_thread_type: Literal["AUTO", "FRAME", "SLICE", "NONE"] = "AUTO"
    decode_threads: int = Field(0, ge=0)  # 0 = FFmpeg picks from the core count
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)


class SpotConfig(ConfigModel):
    """``[spot]``: which spotting profile (configs/spot/<profile>.toml or a path) and the ring length."""

    profile: str = "default"
    ring_seconds: float = Field(6.0, ge=1.0, le=60.0)  # per-face history; longer than the longest expression


class EngineConfig(ConfigModel):
    """``[engine]``: the classifier; no path means the engine shipped with mer (synthetic-trained)."""

    path: Path | None = None
    backend: Literal["auto", "tensorrt", "torch-cuda", "onnxruntime", "torch"] = "auto"
    threads: int = Field(1, ge=1)  # intra-op threads for onnxruntime/torch; one leaves the other core to capture


class EventsConfig(ConfigModel):
    """``[events]``: where events are published and journaled, and who may read them (docs/events.md)."""

    endpoint: str = DEFAULT_ENDPOINT
    replay_endpoint: str | None = DEFAULT_REPLAY_ENDPOINT  # "" or omitted in TOML cannot mean off: use --no-replay
    journal: Path = Path("runs/stream/events.jsonl")
    # CURVE, from `mer keys server DIR`: the server's secret certificate and the folder of client
    # public keys let in. An endpoint other hosts can reach is refused without it unless insecure.
    curve_secret_key: Path | None = None
    curve_authorized_clients: Path | None = None
    insecure: bool = False  # true: publish in clear text where other hosts can connect

    @model_validator(mode="after")
    def _clients_need_the_server_key(self) -> EventsConfig:
        if self.curve_authorized_clients is not None and self.curve_secret_key is None:
            raise ValueError("curve_authorized_clients needs curve_secret_key")
        return self


class MetricsConfig(ConfigModel):
    """``[metrics]``: the Prometheus endpoint (docs/metrics.md); loopback unless changed here."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)  # 0 = any free port


class StreamConfig(ConfigModel):
    """A whole stream profile; every section has working defaults."""

    stream_id: str | None = None  # default: derived from the source (file stem, camera0, URL)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    faces: FacesConfig = Field(default_factory=FacesConfig)
    spot: SpotConfig = Field(default_factory=SpotConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


def spot_profile_path(profile: str) -> Path:
    """A spotting profile by name (``configs/spot/<name>.toml``) or by path."""
    if profile.endswith(".toml") or "/" in profile:
        return Path(profile)
    return SPOT_PROFILE_DIR / f"{profile}.toml"


def load_stream_config(path: str | Path | None = None) -> StreamConfig:
    """Load a stream profile; ``None`` loads the shipped ``configs/stream/default.toml``."""
    return load_config(DEFAULT_STREAM_CONFIG if path is None else path, StreamConfig)
