"""FaceRingBuffer: preallocated, lookup by frame index, clear errors for frames that are gone."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from engines.errors import InputError
from streamer.spotting import FaceRingBuffer, FrameEvictedError


def frame(value: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    return np.full((size, size), value % 256, dtype=np.uint8), np.full((68, 2), value, dtype=np.float32)


def test_get_returns_what_was_pushed_and_overwrites_the_oldest():
    ring = FaceRingBuffer(capacity=4, size=16)
    for i in range(6):
        gray, points = frame(i)
        ring.push(gray, i / 30, i, points)
    assert len(ring) == 4 and ring.oldest_index == 2 and ring.latest_index == 5 and ring.fill == 1.0
    gray, t, points = ring.get(3)
    assert gray[0, 0] == 3 and t == pytest.approx(3 / 30) and points[0, 0] == 3
    with pytest.raises(FrameEvictedError, match="frame 1 has been overwritten"):
        ring.get(1)
    with pytest.raises(KeyError, match="not in the ring yet"):
        ring.get(6)
    assert 2 in ring and 1 not in ring


def test_skipped_indices_are_found_by_search_and_reported():
    ring = FaceRingBuffer(capacity=8, size=16)
    for i in (0, 1, 5, 6, 10):
        gray, points = frame(i)
        ring.push(gray, i * 0.1, i, points)
    assert ring.get(5)[0][0, 0] == 5 and ring.get(0)[0][0, 0] == 0
    with pytest.raises(KeyError, match="frame 3 was skipped"):
        ring.get(3)
    assert int(ring.indices[ring.slot_at_or_before(0.75)]) == 6
    assert ring.slot_at_or_before(-1.0) is None


def test_bad_frames_name_the_frame():
    ring = FaceRingBuffer(capacity=4, size=16)
    gray, points = frame(0)
    ring.push(gray, 0.0, 7, points)
    with pytest.raises(InputError, match="frame 7: frame indices must increase"):
        ring.push(gray, 0.1, 7, points)
    with pytest.raises(InputError, match="frame 8: expected a 16x16 uint8 crop"):
        ring.push(np.zeros((8, 8), np.uint8), 0.1, 8, points)


def test_push_allocates_nothing_in_steady_state():
    size = 128
    ring = FaceRingBuffer(capacity=30, size=size)
    gray, points = frame(1, size)
    arrays = (ring.gray, ring.points, ring.times, ring.indices)
    for i in range(40):  # wrap once
        ring.push(gray, i / 30, i, points)
    tracemalloc.start()
    for i in range(40, 240):
        ring.push(gray, i / 30, i, points)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert all(a is b for a, b in zip(arrays, (ring.gray, ring.points, ring.times, ring.indices)))
    assert peak < gray.nbytes // 4  # 200 pushes of a 16 KB crop: no copy of a frame was ever made


def test_colour_ring_keeps_colour_crops_and_returns_a_clip_between_two_frames():
    ring = FaceRingBuffer(capacity=5, size=16, color=True)
    for i in (0, 1, 3, 4, 5, 6):  # frame 2 had no face: skipped
        gray, points = frame(i)
        ring.push(gray, i / 30, i, points, color=np.full((16, 16, 3), (i, 2 * i, 3 * i), dtype=np.uint8))
    clip, indices = ring.frames_between(2, 5, color=True)  # starts on the skipped frame
    assert indices.tolist() == [3, 4, 5]
    assert clip.shape == (3, 16, 16, 3) and clip[:, 0, 0].tolist() == [[3, 6, 9], [4, 8, 12], [5, 10, 15]]
    grey, _ = ring.frames_between(3, 4)
    assert grey[:, 0, 0].tolist() == [3, 4]
    clip[0] = 0  # a copy: the ring is untouched
    assert ring.frames_between(3, 3, color=True)[0][0, 0, 0].tolist() == [3, 6, 9]
    with pytest.raises(FrameEvictedError, match="frame 0 has been overwritten"):
        ring.frames_between(0, 4)
    with pytest.raises(KeyError, match="not in the ring yet"):
        ring.frames_between(4, 9)


def test_colour_ring_refuses_a_frame_without_its_colour_crop_and_grey_ring_has_none():
    ring = FaceRingBuffer(capacity=3, size=16, color=True)
    gray, points = frame(1)
    with pytest.raises(InputError, match="keeps colour crops"):
        ring.push(gray, 0.0, 1, points)
    grey_only = FaceRingBuffer(capacity=3, size=16)
    grey_only.push(gray, 0.0, 1, points)
    assert grey_only.color is None
    with pytest.raises(ValueError, match="no colour crops"):
        grey_only.frames_between(1, 1, color=True)
