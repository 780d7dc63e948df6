"""CaptureLoop: files lose no frame, live sources drop and count, lost sources come back."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from engines.config import load_config
from engines.errors import ConfigError, InputError
from streamer.capture import CaptureCounters, CaptureLoop, FrameQueue, backoff_delays
from streamer.sources import CameraSource
from streamer.stream_config import (
    DEFAULT_STREAM_CONFIG,
    CaptureConfig,
    ReconnectConfig,
    StreamConfig,
    load_stream_config,
)
from tests.video_clips import WAIT_S, wait_until, write_cv2, write_pyav




def test_file_is_read_completely_by_a_slow_consumer(tmp_path):
    path = write_pyav(tmp_path / "clip.mp4", 40)
    loop = CaptureLoop(str(path), CaptureConfig(queue_size=2))
    frames = []
    for frame in loop:
        time.sleep(0.002)  # slower than decoding: the loop must wait, not drop
        frames.append(frame)
    assert [f.index for f in frames] == list(range(40))
    assert [f.t for f in frames] == [i / 30 for i in range(40)]
    assert loop.counters.snapshot() == {"frames_read": 40, "frames_dropped": {}, "reconnects": 0}
    assert loop.state == "ended"


@pytest.mark.parametrize(("policy", "kept"), [("drop_newest", range(0, 4)), ("drop_oldest", range(36, 40))])
def test_live_source_drops_by_policy_when_the_consumer_lags(tmp_path, policy, kept):
    # A file played in real time is a live source. The consumer takes nothing until capture has
    # read all 40 frames, so exactly queue_size frames survive and the other 36 are counted.
    path = write_pyav(tmp_path / "clip.mp4", 40, rate=200)
    dropped = []
    counters = CaptureCounters(on_drop=lambda reason, index: dropped.append((reason, index)))
    loop = CaptureLoop(str(path), CaptureConfig(queue_size=4, drop_policy=policy, file_playback="realtime"),
                       counters=counters).start()
    wait_until(lambda: loop.state == "ended", "capture to finish")
    delivered = [frame.index for frame in loop]
    assert delivered == list(kept)
    assert sorted(index for _, index in dropped) == sorted(set(range(40)) - set(kept))
    assert {reason for reason, _ in dropped} == {"queue_full"}
    assert counters.snapshot() == {"frames_read": 40, "frames_dropped": {"queue_full": 36}, "reconnects": 0}


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
def test_every_frame_is_either_delivered_or_counted_as_dropped(tmp_path, policy):
    path = write_pyav(tmp_path / "clip.mp4", 60, rate=200)
    dropped = []
    counters = CaptureCounters(on_drop=lambda reason, index: dropped.append(index))
    loop = CaptureLoop(str(path), CaptureConfig(queue_size=3, drop_policy=policy, file_playback="realtime"),
                       counters=counters)
    delivered = []
    for frame in loop:
        time.sleep(0.02)  # 50 frames/s against a 200 frames/s source
        delivered.append(frame.index)
    assert delivered == sorted(delivered)
    assert sorted(delivered + dropped) == list(range(60))
    assert counters.frames_read == 60
    assert counters.frames_dropped["queue_full"] == len(dropped) > 0
    if policy == "drop_newest":
        assert delivered[:3] == [0, 1, 2]  # the queue fills before anything is dropped
    else:
        assert delivered[-3:] == [57, 58, 59]  # the newest frames are never the ones dropped


def test_frame_queue_waits_for_room_when_asked():
    queue = FrameQueue(1, "drop_oldest")
    queue.put_wait("first")
    later = threading.Thread(target=queue.put_wait, args=("second",))
    later.start()
    later.join(0.05)
    assert later.is_alive() and len(queue) == 1  # blocked: no room
    assert queue.get() == "first"
    later.join(WAIT_S)
    assert queue.get() == "second"
    queue.close()
    assert queue.get() is None


def test_stop_ends_iteration_and_the_thread(tmp_path):
    path = write_pyav(tmp_path / "clip.mp4", 300)
    loop = CaptureLoop(str(path), CaptureConfig(queue_size=2))
    seen = []
    for frame in loop:
        seen.append(frame.index)
        if frame.index == 5:
            loop.stop()
    assert seen == list(range(6))
    assert loop.state == "ended"
    assert loop.counters.frames_read < 300


def test_stop_interrupts_realtime_pacing(tmp_path):
    path = write_pyav(tmp_path / "slow.mp4", 10, rate=1)  # 10 s of real time
    with CaptureLoop(str(path), CaptureConfig(file_playback="realtime")) as loop:
        assert next(iter(loop)).index == 0
    assert loop.state == "ended" and loop.counters.frames_read <= 2


def test_missing_file_fails_at_start(tmp_path):
    with pytest.raises(InputError, match="no such video file"):
        CaptureLoop(str(tmp_path / "nope.mp4")).start()


def test_lost_live_source_is_reopened_and_numbering_continues(tmp_path):
    # A camera that "unplugs" at the end of each pass over its clip; every reopen plays it again.
    path = write_cv2(tmp_path / "cam.avi", 10, fourcc="MJPG")
    config = CaptureConfig(queue_size=100, reconnect={"initial_delay_s": 0.01, "max_delay_s": 0.02})
    reconnects = []
    loop = CaptureLoop(CameraSource(str(path), config), config,
                       counters=CaptureCounters(on_reconnect=reconnects.append))
    frames = []
    for frame in loop:
        frames.append(frame)
        if len(frames) == 30:
            loop.stop()
    assert [f.index for f in frames] == list(range(30))
    assert all(b.t > a.t for a, b in zip(frames, frames[1:]))
    assert loop.counters.reconnects >= 2 and reconnects[:2] == [1, 2]
    assert loop.counters.frames_dropped == {}


def test_source_that_cannot_be_reopened_fails_the_iteration(tmp_path):
    path = write_cv2(tmp_path / "cam.avi", 5, fourcc="MJPG")
    config = CaptureConfig(reconnect={"initial_delay_s": 0.01, "max_delay_s": 0.02, "max_attempts": 3})
    loop = CaptureLoop(CameraSource(str(path), config), config).start()
    path.unlink()  # the "camera" is gone for good
    seen = []
    with pytest.raises(InputError, match=r"source lost and not reopened after 3 attempts"):
        for frame in loop:
            seen.append(frame.index)
    assert seen == list(range(5))
    assert loop.counters.reconnects == 0


def test_backoff_doubles_up_to_the_maximum():
    config = ReconnectConfig(initial_delay_s=0.5, max_delay_s=4.0, max_attempts=6)
    assert list(backoff_delays(config)) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    forever = ReconnectConfig(initial_delay_s=1.0, max_delay_s=3.0, max_attempts=0)
    assert list(itertools.islice(backoff_delays(forever), 100))[-3:] == [3.0, 3.0, 3.0]


def test_shipped_stream_profile_is_valid_and_matches_the_defaults():
    assert load_config(DEFAULT_STREAM_CONFIG, StreamConfig) == StreamConfig()
    assert load_stream_config().capture.drop_policy == "drop_oldest"


def test_stream_profile_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[capture]\nqueue_size = 0\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: key 'capture\.queue_size': expected .*greater than or equal to 1"):
        load_stream_config(path)
    path.write_text("[capture]\ndrop_policy = 'drop_random'\n")
    with pytest.raises(ConfigError, match=r"key 'capture\.drop_policy'"):
        load_stream_config(path)
    path.write_text("[capture.reconnect]\ninitial_delay_s = 5.0\nmax_delay_s = 1.0\n")
    with pytest.raises(ConfigError, match=r"max_delay_s \(1\.0\) must be >= initial_delay_s \(5\.0\)"):
        load_stream_config(path)
    path.write_text("[capture]\nqueue_sise = 4\n")
    with pytest.raises(ConfigError, match=r"key 'capture\.queue_sise': unknown key"):
        load_stream_config(path)


def test_frames_still_queued_at_a_stop_are_counted_not_lost(tmp_path):
    # A file read at full speed fills the queue while the consumer sleeps; stopping then
    # discards the queued frames, and each is counted as dropped ("stopped"), not forgotten.
    path = write_pyav(tmp_path / "clip.mp4", 40, rate=200)
    dropped = []
    counters = CaptureCounters(on_drop=lambda reason, index: dropped.append((reason, index)))
    loop = CaptureLoop(str(path), CaptureConfig(queue_size=6), counters=counters)
    delivered = []
    for frame in loop:
        delivered.append(frame.index)
        if len(delivered) == 5:
            wait_until(lambda: len(loop._queue) == 6, "the queue to fill")
            loop.stop()
    assert delivered == [0, 1, 2, 3, 4]
    assert {reason for reason, _ in dropped} == {"stopped"}
    assert sorted(delivered + [index for _, index in dropped]) == list(range(counters.frames_read))
    assert len(dropped) >= 6 and counters.frames_dropped["stopped"] == len(dropped)
