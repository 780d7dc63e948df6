"""SignalDetector (shared by both spotters) and the spotting profiles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.config import parse_config
from engines.errors import ConfigError
from streamer.spotting import SpotParams, create_spotter, load_spot_params
from streamer.spotting.intervals import interval_kind
from streamer.spotting.params import DetectParams
from streamer.spotting.signal import SignalDetector, moving_average

FPS = 30.0


def quiet(i: int) -> float:
    return 0.1 + 0.01 * (i % 3)


def bump(i: int, start: int, length: int, height: float) -> float:
    x = (i - start) / length
    return height * (1 - math.cos(2 * math.pi * x)) / 2 if 0 <= x <= 1 else 0.0


def run(detector: SignalDetector, values) -> list[tuple[int, object]]:
    emitted = []
    for i, v in enumerate(values):
        emitted += [(i, interval) for interval in detector.push(i, i / FPS, v)]
    return emitted


def test_a_bump_is_spotted_with_its_boundaries_after_the_look_ahead():
    params = DetectParams(smooth_s=0.0, look_ahead_s=0.31)
    values = [quiet(i) + bump(i, 100, 10, 1.0) for i in range(200)]
    emitted = run(SignalDetector(params, FPS), values)
    assert len(emitted) == 1
    pushed_at, interval = emitted[0]
    # Above 0.2 of the rise from frame 102 to 108; the boundary frames are the first ones below.
    assert (interval.onset, interval.apex, interval.offset) == (101, 105, 109)
    assert interval.kind == "micro" and interval.onset_t == pytest.approx(101 / FPS)
    assert interval.score == pytest.approx(1.1) and interval.intensity == pytest.approx(1.0, abs=0.01)
    assert pushed_at == 119  # first frame at least 0.31 s after the offset (109 / 30 + 0.31 = 3.943 s)


def test_provisional_bounds_are_known_during_the_look_ahead_and_cleared_when_final():
    params = DetectParams(smooth_s=0.0, look_ahead_s=0.31)
    detector = SignalDetector(params, FPS)
    values = [quiet(i) + bump(i, 100, 10, 1.0) for i in range(200)]
    first_seen, final_at = None, None
    for i, value in enumerate(values):
        final = detector.push(i, i / FPS, value)
        if detector.provisional and first_seen is None:
            first_seen = i
            assert list(detector.provisional.values()) == [(101, 105)]  # the final onset and apex
        if final:
            final_at = i
            assert (final[0].onset, final[0].apex) == (101, 105)
            assert detector.provisional == {}
    # Known as soon as the region closed (merge gap after frame 108), ten frames before it was final.
    assert first_seen is not None and final_at == 119 and final_at - first_seen >= 8


def test_long_bumps_are_macro_and_two_bumps_are_two_intervals():
    params = DetectParams(smooth_s=0.0)
    values = [quiet(i) + bump(i, 60, 30, 2.0) + bump(i, 120, 8, 0.8) for i in range(220)]
    intervals = [interval for _, interval in run(SignalDetector(params, FPS), values)]
    assert [(i.kind, i.apex) for i in intervals] == [("macro", 75), ("micro", 124)]
    assert intervals[0].onset < 66 and intervals[0].offset > 84


def test_too_short_or_too_long_intervals_are_dropped_and_flush_finishes_the_last():
    params = DetectParams(smooth_s=0.0, min_duration_s=0.2, max_duration_s=1.0)
    values = [quiet(i) + bump(i, 50, 4, 1.0) + bump(i, 100, 45, 1.0) + bump(i, 190, 9, 1.0) for i in range(200)]
    detector = SignalDetector(params, FPS)
    assert run(detector, values) == []  # the 4-frame bump is too short, the 45-frame one too long
    final = detector.flush()
    assert [(i.onset, i.offset) for i in final] == [(191, 198)]  # finished by flush, 0.3 s look-ahead not needed


def test_threshold_follows_the_quiet_level_not_a_constant():
    for scale in (1.0, 50.0):
        detector = SignalDetector(DetectParams(smooth_s=0.0), FPS)
        rng = np.random.default_rng(0)
        values = scale * (1 + 0.1 * rng.standard_normal(300))
        values[200:210] += scale * np.array([bump(i, 200, 10, 3.0) for i in range(200, 210)])
        intervals = [interval for _, interval in run(detector, values)]
        assert [i.apex for i in intervals] == [205]
        assert detector.baseline == pytest.approx(scale, rel=0.05)


def test_moving_average_is_centred():
    assert moving_average(np.array([0.0, 0, 3, 0, 0]), 3).tolist() == [0, 1, 1, 1, 0]


def test_interval_kind_uses_the_megc_half_second():
    assert interval_kind(1.0, 1.5) == "micro" and interval_kind(0.0, 15 / 30) == "micro"
    assert interval_kind(1.0, 1.51) == "macro"


def test_profiles_load_and_bad_keys_name_the_key(tmp_path):
    default = load_spot_params()
    assert default.method == "flow" and default.detect.look_ahead_s == 0.3
    lbp = load_spot_params("configs/spot/lbp.toml")
    assert lbp.method == "lbp"
    assert type(create_spotter(lbp, 30)).__name__ == "LbpSpotter"
    assert type(create_spotter(default, 200)).__name__ == "FlowSpotter"
    with pytest.raises(ConfigError, match="key 'flow.rois.0'"):
        parse_config({"flow": {"rois": ["nose_tip"]}}, SpotParams)
    with pytest.raises(ConfigError, match="key 'detect.smoothing': unknown key"):
        parse_config({"detect": {"smoothing": 1}}, SpotParams)
    with pytest.raises(ConfigError, match="min_duration_s must be smaller"):
        parse_config({"detect": {"min_duration_s": 5.0}}, SpotParams)


def drift_after_bump(i: int) -> float:
    """Rises to 1.0 over frames 100..110, falls back over 110..120, but only to 0.1 above the quiet level:
    after an expression the face (or the reference frame the motion is measured from) has drifted."""
    if i < 100:
        return 0.0
    if i <= 110:
        return (1 - math.cos(math.pi * (i - 100) / 10)) / 2
    if i <= 120:
        return 0.1 + 0.9 * (1 + math.cos(math.pi * (i - 110) / 10)) / 2
    return 0.1


def test_a_region_is_released_when_the_signal_falls_to_a_share_of_its_peak():
    values = [quiet(i) + drift_after_bump(i) for i in range(400)]
    detector = SignalDetector(DetectParams(smooth_s=0.0, release_fraction=0.2), FPS)
    emitted, released = [], []
    for i, value in enumerate(values):
        emitted += [(i, interval) for interval in detector.push(i, i / FPS, value)]
        if detector.released:
            released.append(i)
    assert detector.threshold == pytest.approx(0.184, abs=0.001)  # the 0.1 plateau stays above it
    assert [(i, x.onset, x.apex, x.offset) for i, x in emitted] == [(127, 102, 110, 118)]
    assert released == [120] and detector.settling  # no new region opens on the plateau
    assert detector.flush() == []


def test_without_release_the_drifted_region_never_ends_and_is_lost():
    values = [quiet(i) + drift_after_bump(i) for i in range(400)]
    detector = SignalDetector(DetectParams(smooth_s=0.0, release_fraction=0.0), FPS)
    assert run(detector, values) == [] and detector.flush() == []  # above threshold > max_duration_s: dropped
