"""``mer analyze --video``'s annotated mp4 keeps every frame, even when the source's resolution
changes midway (OpenCV's writer silently drops frames of another size)."""

from __future__ import annotations

import numpy as np

from streamer.outputs import AnnotatedVideoWriter
from tests.video_clips import read_frames


def test_frames_of_another_size_are_letterboxed_not_dropped(tmp_path):
    writer = AnnotatedVideoWriter(tmp_path / "annotated.mp4", 10.0, (64, 48))
    for _ in range(4):
        writer.write(np.full((48, 64, 3), 60, np.uint8), 0.0, [])
    for _ in range(4):  # 16:9 after the change: scaled to 64x36, 6-pixel black bars above and below
        writer.write(np.full((72, 128, 3), 220, np.uint8), 0.0, [])
    writer.close()
    frames = read_frames(tmp_path / "annotated.mp4")
    assert len(frames) == 8
    assert all(frame.shape == (48, 64, 3) for frame in frames)
    assert abs(float(frames[1].mean()) - 60) < 8  # written as it came
    later = frames[-1].astype(float)
    assert later[10:38].mean() > 200  # the picture, scaled
    assert later[:4].mean() < 30 and later[-4:].mean() < 30  # the bars
