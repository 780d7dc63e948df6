"""Frame sources: files decoded with PyAV (exact timestamps, clear errors), webcams via OpenCV."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engines.errors import InputError
from streamer.sources import CameraSource, FileSource, NetworkSource, SourceLost, open_source
from streamer.stream_config import CaptureConfig
from tests.video_clips import SIZE, frame_level, level, noise, write_cv2, write_pyav


def read_all(source):
    with source:
        return list(source.frames())


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("x264.mp4", lambda p: write_pyav(p, 30)),
        ("mpeg4.mp4", lambda p: write_cv2(p, 30, fourcc="mp4v")),
        ("mjpeg.avi", lambda p: write_cv2(p, 30, fourcc="MJPG")),
    ],
)
def test_file_frames_have_container_timestamps_and_numbers(tmp_path, name, write):
    path = write(tmp_path / name)
    frames = read_all(open_source(str(path)))
    assert [f.index for f in frames] == list(range(30))
    assert [f.t for f in frames] == [i / 30 for i in range(30)]
    assert all(f.image.shape == (SIZE[1], SIZE[0], 3) and f.image.dtype == np.uint8 for f in frames)
    # The frames come in display order even though x264 stores B-frames out of order.
    assert all(abs(frame_level(f.image) - level(f.index)) <= 4 for f in frames)
    assert all(b.captured_at >= a.captured_at for a, b in zip(frames, frames[1:]))


def gradient(i: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Smooth colour ramps that shift with ``i``: every grey level from dark to light, in colour."""
    y, x = np.mgrid[0:size[1], 0:size[0]]
    image = np.stack([(x * 4 + i) % 256, (y * 5 + 2 * i) % 256, ((x + y) * 2 + 3 * i) % 256], axis=-1)
    return cv2.GaussianBlur(image.astype(np.uint8), (5, 5), 0)  # codecs smear sharp colour edges anyway


def write_rgb_png(path, frames: int) -> Path:
    """A lossless RGB video (PNG frames): no luma plane, so grey frames come by conversion."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=30)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "rgb24"
        for i in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(gradient(i), format="bgr24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("x264.mp4", lambda p: write_pyav(p, 12, content=gradient)),  # limited range: expanded
        ("mjpeg.avi", lambda p: write_pyav(p, 12, codec="mjpeg", content=gradient)),  # yuvj420p: full range
        ("rgb.mov", lambda p: write_rgb_png(p, 12)),  # no luma plane: converted
    ],
)
def test_grey_frames_are_the_luma_that_grey_conversion_gives(tmp_path, name, write):
    """``color=False`` (a run that needs no colour) hands over the decoder's luma; it equals the
    grey of the BGR frame up to the rounding of the colour conversion."""
    path = write(tmp_path / name)
    colour, grey = read_all(FileSource(path)), read_all(FileSource(path, color=False))
    assert [(f.index, f.t) for f in grey] == [(f.index, f.t) for f in colour]
    for c, g in zip(colour, grey):
        assert g.image.shape == (SIZE[1], SIZE[0]) and g.image.dtype == np.uint8 and g.image.flags.c_contiguous
        difference = np.abs(g.image.astype(int) - cv2.cvtColor(c.image, cv2.COLOR_BGR2GRAY))
        assert difference.mean() <= 1.5 and difference.max() <= 6, (c.index, difference.mean(), difference.max())
    assert np.ptp(grey[0].image) > 150  # the full range of grey levels came through


def test_grey_frames_from_a_reopened_source_and_a_camera(tmp_path):
    path = write_cv2(tmp_path / "cam.avi", 6, fourcc="MJPG")
    frames = read_all(open_source(str(path), color=False))
    assert all(f.image.ndim == 2 and abs(frame_level(f.image) - level(f.index)) <= 4 for f in frames)
    frames = []
    with CameraSource(str(path), color=False).reopen(0) as camera:  # a reconnection keeps the choice
        assert camera.color is False
        with pytest.raises(SourceLost):
            for frame in camera.frames():
                frames.append(frame)
    assert len(frames) == 6
    assert all(f.image.ndim == 2 and abs(frame_level(f.image) - level(f.index)) <= 4 for f in frames)


def test_ntsc_rate_timestamps_are_exact(tmp_path):
    rate = Fraction(30000, 1001)
    frames = read_all(FileSource(write_pyav(tmp_path / "ntsc.mp4", 20, rate=rate)))
    assert [f.t for f in frames] == [float(i / rate) for i in range(20)]


def test_timestamps_are_relative_to_the_first_frame(tmp_path):
    # An MPEG-TS file starts at pts 1.4 s (muxer preload); stream time still starts at 0.
    path = write_pyav(tmp_path / "clip.ts", 10, codec="mpeg2video")
    with av.open(str(path)) as container:
        first_pts = next(container.decode(video=0)).time
    assert first_pts > 0
    frames = read_all(FileSource(path))
    assert [round(f.t, 9) for f in frames] == [round(i / 30, 9) for i in range(10)]


def test_file_source_reports_its_properties(tmp_path):
    with FileSource(write_pyav(tmp_path / "clip.mp4", 12, rate=25)) as source:
        assert (source.kind, source.live, source.fps, source.size, source.frame_count) == ("file", False, 25.0, SIZE, 12)


def test_missing_file_is_an_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match="no such video file") as caught:
        open_source(str(tmp_path / "nope.mp4"))
    assert caught.value.path == tmp_path / "nope.mp4"


def test_truncated_mp4_without_its_index_is_an_input_error(tmp_path):
    path = write_pyav(tmp_path / "cut.mp4", 30)  # the moov index is written last
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated, or not a video file") as caught:
        open_source(str(path))
    assert caught.value.path == path
    assert str(path) in str(caught.value)


def test_a_file_that_is_not_video_is_an_input_error(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are not frames\n" * 50)
    with pytest.raises(InputError, match="cannot be read as video"):
        open_source(str(path))


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        samples.rate = 8000
        container.mux(stream.encode(samples))
        container.mux(stream.encode())
    with pytest.raises(InputError, match="has no video stream"):
        open_source(str(path))


def test_corrupt_frame_mid_file_is_skipped_counted_and_named(tmp_path, caplog):
    path = write_cv2(tmp_path / "clip.avi", 30, fourcc="MJPG")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]  # JPEG start of each frame
    assert len(starts) == 30
    end = data.index(b"\xff\xd9", starts[10])
    data[starts[10] + 2:end] = bytes(end - starts[10] - 2)  # wipe frame 10's image data
    path.write_bytes(bytes(data))

    skipped = []
    with caplog.at_level(logging.WARNING, logger="streamer.sources"):
        frames = read_all(FileSource(path, on_skip=lambda reason, index: skipped.append((reason, index))))
    assert skipped == [("decode_error", 10)]
    assert [f.index for f in frames] == [i for i in range(30) if i != 10]
    assert [f.t for f in frames] == [i / 30 for i in range(30) if i != 10]
    assert f"{path}: frame 10 (t=0.333 s) cannot be decoded" in caplog.text


def test_file_cut_mid_data_counts_the_missing_frames(tmp_path, caplog):
    # With the index first (faststart), a cut file opens, plays its first part, then ends early.
    path = write_pyav(tmp_path / "cut.mp4", 30, options={"movflags": "faststart"}, content=noise)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    skipped = []
    with caplog.at_level(logging.WARNING, logger="streamer.sources"):
        frames = read_all(FileSource(path, on_skip=lambda reason, index: skipped.append((reason, index))))
    assert 0 < len(frames) < 30
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [index for _, index in skipped] == list(range(len(frames), 30))
    assert {reason for reason, _ in skipped} <= {"decode_error", "truncated"}
    assert "ends early: the header promises 30 frames" in caplog.text


def test_file_url_scheme_opens_the_file(tmp_path):
    path = write_pyav(tmp_path / "clip.mp4", 5)
    assert isinstance(open_source(f"file://{path}"), FileSource)


def test_unknown_url_scheme_is_an_input_error():
    with pytest.raises(InputError, match="unsupported URL scheme 'ftp'"):
        open_source("ftp://example.org/clip.mp4")


@pytest.mark.parametrize("spec", [99, "99"])
def test_webcam_index_opens_a_camera(spec):
    # No camera 99 exists here (nor on CI): opening it must fail clearly, not hang.
    with pytest.raises(InputError, match="camera 99: cannot be opened"):
        open_source(spec)


def test_unreachable_network_stream_is_an_input_error_naming_it():
    config = CaptureConfig(network={"open_timeout_s": 2.0, "read_timeout_s": 1.0})
    with pytest.raises(InputError, match=r"tcp://127\.0\.0\.1:9/: cannot open the stream"):
        NetworkSource("tcp://127.0.0.1:9/", config)  # port 9 (discard) is closed: refused at once


def test_camera_source_uses_the_capture_clock_and_reports_loss(tmp_path):
    # cv2.VideoCapture opens files too: a real capture device path without a camera.
    path = write_cv2(tmp_path / "cam.avi", 10, fourcc="MJPG")
    with CameraSource(str(path), first_index=5) as camera:
        assert camera.live and camera.kind == "camera"
        frames = []
        with pytest.raises(SourceLost, match="no frame could be read"):
            for frame in camera.frames():
                frames.append(frame)
    assert [f.index for f in frames] == list(range(5, 15))
    assert all(abs(frame_level(f.image) - level(f.index - 5)) <= 4 for f in frames)
    assert all(f.t == pytest.approx(f.captured_at - camera.clock.start) for f in frames)
    assert all(b.t > a.t for a, b in zip(frames, frames[1:]))
