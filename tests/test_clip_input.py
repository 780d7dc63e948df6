"""build_clip_input follows its ClipSpec: sampling, TIM, size, colour, flow to the next frame, magnification."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.clip_input import ClipFrames, build_clip_input, build_clip_inputs, temporal_weights
from engines.clip_spec import ClipSpec
from engines.errors import InputError
from engines.motion.tim import tim_interpolate


def ramp_clip(count: int, size: int = 16, step: int = 10, colour: bool = False) -> np.ndarray:
    """Frame ``i`` is uniformly ``step * i`` (uint8): a sample's value tells which frames made it."""
    values = (np.arange(count) * step).astype(np.uint8)
    clip = np.broadcast_to(values[:, None, None], (count, size, size))
    return np.ascontiguousarray(np.repeat(clip[..., None], 3, axis=3) if colour else clip)


def texture(size: int, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).random((size, size)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.5)
    return ((smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255).astype(np.uint8)


def frame_values(sample: np.ndarray) -> np.ndarray:
    """The uniform value (0..255) of each frame's first plane."""
    return sample[:, 0].mean(axis=(1, 2)) * 255


# --- temporal sampling -------------------------------------------------------------------------------------------

def test_apex_anchor_picks_the_apex_crop():
    weights = temporal_weights(ClipSpec(frames=1, anchors="apex", size=16), onset=3, apex=7, offset=12)
    np.testing.assert_array_equal(weights, np.eye(10)[[4]])
    sample = build_clip_input(ramp_clip(15), 3, 7, 12, ClipSpec(frames=1, anchors="apex", size=16, color="gray"))
    assert sample.shape == (1, 16, 16)
    np.testing.assert_allclose(sample * 255, 70, atol=1e-3)


def test_onset_apex_is_evenly_spaced_from_onset_to_apex():
    spec = ClipSpec(frames=5, anchors="onset_apex", size=16, color="gray")
    sample = build_clip_input(ramp_clip(20), 2, 10, 15, spec)
    assert sample.shape == (5, 1, 16, 16)
    np.testing.assert_allclose(frame_values(sample), [20, 40, 60, 80, 100], atol=1e-3)


def test_two_frames_are_exactly_onset_and_apex():
    spec = ClipSpec(frames=2, anchors="onset_apex", size=16, color="gray")
    np.testing.assert_allclose(frame_values(build_clip_input(ramp_clip(9), 1, 6, None, spec)), [10, 60], atol=1e-3)


def test_fractional_positions_blend_the_two_neighbouring_crops():
    weights = temporal_weights(ClipSpec(frames=3, anchors="onset_apex", size=16), onset=0, apex=3, offset=5)
    np.testing.assert_allclose(weights[1], [0, 0.5, 0.5, 0, 0, 0])
    sample = build_clip_input(ramp_clip(6), 0, 3, 5, ClipSpec(frames=3, anchors="onset_apex", size=16, color="gray"))
    np.testing.assert_allclose(frame_values(sample), [0, 15, 30], atol=1e-3)


def test_onset_apex_offset_puts_the_apex_in_the_middle():
    spec = ClipSpec(frames=9, anchors="onset_apex_offset", size=16, color="gray")
    sample = build_clip_input(ramp_clip(25), 0, 4, 20, spec)
    # onset..apex (0..4) over indices 0..4, apex..offset (4..20) over indices 4..8
    np.testing.assert_allclose(frame_values(sample), [0, 10, 20, 30, 40, 80, 120, 160, 200], atol=1e-3)
    assert frame_values(sample)[spec.frames // 2] == pytest.approx(40, abs=1e-3)


def test_offset_none_means_the_last_crop():
    spec = ClipSpec(frames=3, anchors="onset_apex_offset", size=16, color="gray")
    np.testing.assert_allclose(frame_values(build_clip_input(ramp_clip(11), 0, 2, None, spec)), [0, 20, 100],
                               atol=1e-3)


def test_tim_resamples_the_whole_onset_offset_clip():
    clip = ramp_clip(16, step=12)
    spec = ClipSpec(frames=9, anchors="onset_apex_offset", size=16, color="gray", interpolation="tim")
    sample = build_clip_input(clip, 2, 5, 14, spec)
    expected = tim_interpolate(clip[2:15].astype(np.float32), 9)
    np.testing.assert_allclose(sample[:, 0] * 255, expected, atol=1e-3)
    np.testing.assert_allclose(frame_values(sample), np.linspace(24, 168, 9), atol=0.5)  # a ramp stays a ramp


def test_tim_with_onset_apex_uses_onset_to_apex_only():
    spec = ClipSpec(frames=4, anchors="onset_apex", size=16, color="gray", interpolation="tim")
    weights = temporal_weights(spec, onset=0, apex=5, offset=9)
    assert np.all(weights[:, 6:] == 0)
    np.testing.assert_allclose(frame_values(build_clip_input(ramp_clip(10), 0, 5, 9, spec)), [0, 50 / 3, 100 / 3, 50],
                               atol=0.5)


def test_tim_refuses_a_one_frame_span():
    spec = ClipSpec(frames=3, anchors="onset_apex_offset", size=16, interpolation="tim")
    with pytest.raises(InputError, match="offset"):
        build_clip_input(ramp_clip(5, colour=True), 2, 2, 2, spec)


# --- size and colour ---------------------------------------------------------------------------------------------

def test_rgb_and_gray_planes_in_zero_to_one():
    frame = np.zeros((24, 24, 3), dtype=np.uint8)
    frame[...] = (100, 50, 200)  # R, G, B
    rgb = build_clip_input([frame], 0, 0, 0, ClipSpec(frames=1, anchors="apex", size=12))
    assert rgb.shape == (3, 12, 12) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb.mean(axis=(1, 2)), np.array([100, 50, 200]) / 255, atol=1e-6)
    gray = build_clip_input([frame], 0, 0, 0, ClipSpec(frames=1, anchors="apex", size=12, color="gray"))
    assert gray.shape == (1, 12, 12)
    # The front end's grey: 0.299 R + 0.587 G + 0.114 B = 82.05, in whole grey levels 82.
    np.testing.assert_allclose(gray * 255, 82.0, atol=1e-4)


def test_a_grey_spec_gives_the_same_sample_from_colour_crops_as_from_the_front_ends_grey_crops():
    # Training builds samples from a cache's colour crops, the stream from its ring of grey crops.
    colour = np.random.default_rng(0).integers(0, 256, size=(7, 20, 20, 3), dtype=np.uint8)
    grey = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in colour])
    spec = ClipSpec(frames=5, anchors="onset_apex_offset", size=16, color="gray", interpolation="tim")
    np.testing.assert_array_equal(build_clip_input(colour, 0, 3, 6, spec), build_clip_input(grey, 0, 3, 6, spec))


def test_shrinking_averages_pixel_areas():
    stripes = np.zeros((32, 32), dtype=np.uint8)
    stripes[:, ::2] = 255
    sample = build_clip_input([stripes], 0, 0, 0, ClipSpec(frames=1, anchors="apex", size=16, color="gray"))
    np.testing.assert_allclose(sample, 0.5, atol=1e-6)


def test_grey_crops_cannot_feed_an_rgb_spec():
    with pytest.raises(InputError, match="rgb") as error:
        build_clip_input(ramp_clip(3), 0, 1, 2, ClipSpec(frames=2, anchors="onset_apex", size=16))
    assert error.value.column == "frames"


# --- flow to the next frame --------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["tvl1", "opencv-farneback"])
def test_flow_planes_follow_a_known_shift_and_the_last_is_zero(method):
    big = texture(80)
    shift = 2  # the content moves this many pixels to the right per frame
    frames = np.stack([big[10:58, 14 - shift * k: 62 - shift * k] for k in range(3)])
    spec = ClipSpec(frames=3, anchors="onset_apex", size=48, color="gray", flow=method)
    sample = build_clip_input(frames, 0, 2, 2, spec)  # onset..apex sampled at 0, 1, 2
    assert sample.shape == (3, 3, 48, 48) and spec.channels == ("gray", "u_next", "v_next")
    inner = sample[:, :, 8:-8, 8:-8]
    for k in range(2):
        assert inner[k, 1].mean() == pytest.approx(shift, abs=0.15)
        assert abs(inner[k, 2].mean()) < 0.15
    np.testing.assert_array_equal(sample[2, 1:], 0.0)
    np.testing.assert_allclose(sample[:, 0] * 255, frames, atol=1e-3)  # colour planes untouched


def test_rgb_flow_uses_the_grey_version_and_batches_agree():
    big = texture(64, seed=3)
    grey = np.stack([big[8:40, 10:42], big[8:40, 9:41]])
    colour = np.repeat(grey[..., None], 3, axis=3)
    spec = ClipSpec(frames=2, anchors="onset_apex", size=32, flow="opencv-farneback")
    one = build_clip_input(colour, 0, 1, 1, spec)
    assert one.shape == (2, 5, 32, 32)
    grey_spec = ClipSpec(frames=2, anchors="onset_apex", size=32, color="gray", flow="opencv-farneback")
    np.testing.assert_allclose(one[:, 3:], build_clip_input(grey, 0, 1, 1, grey_spec)[:, 1:], atol=1e-4)
    batch = build_clip_inputs([ClipFrames(colour, 0, 1, 1), ClipFrames(colour[::-1].copy(), 0, 1, 1)], spec)
    assert batch.shape == (2, 2, 5, 32, 32)
    np.testing.assert_allclose(batch[0], one, atol=1e-5)
    assert batch[1, 0, 3].mean() == pytest.approx(-one[0, 3].mean(), abs=0.2)  # reversed clip, reversed flow


# --- magnification -----------------------------------------------------------------------------------------------

def blob_clip(count: int = 16, size: int = 32, peak: float = 6.0) -> np.ndarray:
    """A flat face with a small bright blob that rises and falls (a micro movement in intensity)."""
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / 8.0)
    strength = peak * np.sin(np.linspace(0, np.pi, count))
    return np.clip(100 + strength[:, None, None] * blob, 0, 255).round().astype(np.uint8)


def test_magnification_only_when_asked_and_it_amplifies_the_change():
    clip = blob_clip()
    plain_spec = ClipSpec(frames=2, anchors="onset_apex", size=32, color="gray")
    magnify = {"alpha": 10.0, "low_hz": 0.5, "high_hz": 8.0, "levels": 2}
    spec = ClipSpec(frames=2, anchors="onset_apex", size=32, color="gray", magnify=magnify)
    plain = build_clip_input(clip, 0, 8, 15, plain_spec, fps=30.0)
    np.testing.assert_allclose(plain[:, 0] * 255, clip[[0, 8]], atol=1e-3)  # fps alone changes nothing
    magnified = build_clip_input(clip, 0, 8, 15, spec, fps=30.0)
    change_plain = np.abs(plain[1] - plain[0]).max()
    change_magnified = np.abs(magnified[1] - magnified[0]).max()
    assert change_magnified > 3 * change_plain
    unchanged = ClipSpec(frames=2, anchors="onset_apex", size=32, color="gray", magnify={**magnify, "alpha": 0.0})
    np.testing.assert_allclose(build_clip_input(clip, 0, 8, 15, unchanged, fps=30.0), plain, atol=1e-4)


def test_magnification_needs_the_frame_rate():
    spec = ClipSpec(frames=2, anchors="onset_apex", size=32, color="gray",
                    magnify={"alpha": 10.0, "low_hz": 0.5, "high_hz": 8.0, "levels": 2})
    with pytest.raises(InputError, match="frame rate") as error:
        build_clip_input(blob_clip(), 0, 8, 15, spec)
    assert error.value.column == "fps"


# --- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("onset,apex,offset,field", [
    (0, 12, 9, "apex"),  # apex past the clip
    (5, 3, 9, "apex"),  # apex before onset
    (0, 3, 2, "apex"),  # apex after offset
    (-1, 3, 9, "onset"),
    (0, 3, 10, "offset"),
])
def test_bad_anchors_name_the_field(onset, apex, offset, field):
    with pytest.raises(InputError) as error:
        build_clip_input(ramp_clip(10), onset, apex, offset, ClipSpec(frames=3, anchors="onset_apex_offset",
                                                                      size=16, color="gray"))
    assert error.value.column == field


@pytest.mark.parametrize("frames", [
    [],
    [np.zeros((16, 16), np.uint8), np.zeros((8, 8), np.uint8)],
    np.zeros((3, 16, 16), np.float32),
    np.zeros((3, 16, 16, 4), np.uint8),
])
def test_bad_crops_name_the_field(frames):
    with pytest.raises(InputError) as error:
        build_clip_input(frames, 0, 0, 0, ClipSpec(frames=1, anchors="apex", size=16, color="gray"))
    assert error.value.column == "frames"
