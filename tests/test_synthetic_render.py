"""The rendered motion is where, when and how large the ground truth says (checked with OpenCV flow)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from training.synthetic.action_units import EMOTION_AUS, STILL_EMOTION_AUS
from training.synthetic.clips import ClipStreams, long_clip
from training.synthetic.distractors import DistractorPlan
from training.synthetic.events import Event, Timing
from training.synthetic.identities import make_identity, subject_params
from training.synthetic.render import Renderer
from training.synthetic.settings import SynthSettings

SIZE = (224, 224)


@pytest.fixture(scope="module")
def identities():
    return [make_identity(f"sub{i + 1:02d}", subject_params(i, 7), SIZE, 0.6) for i in range(2)]


def _gray(frame):
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def _field_magnitude(renderer, index):
    """The known forward displacement magnitude on the whole frame."""
    magnitude = np.zeros(renderer.identity.image.shape[:2], dtype=np.float32)
    field = renderer.displacement(index)
    r = renderer.region
    magnitude[r.y0:r.y1, r.x0:r.x1] = np.hypot(field[..., 0], field[..., 1])
    return magnitude


def _tvl1_flow(a, b):
    return cv2.optflow.DualTVL1OpticalFlow_create().calc(_gray(a), _gray(b), None)


def _tvl1(a, b):
    flow = _tvl1_flow(a, b)
    return np.hypot(flow[..., 0], flow[..., 1])


def _field(renderer, index):
    """The known forward displacement field (H, W, 2) on the whole frame."""
    field = np.zeros((*renderer.identity.image.shape[:2], 2), dtype=np.float32)
    r = renderer.region
    field[r.y0:r.y1, r.x0:r.x1] = renderer.displacement(index)
    return field


@pytest.mark.parametrize("subject", [0, 1])
@pytest.mark.parametrize(
    "emotion, action_units",
    sorted({(emotion, combination) for table in (EMOTION_AUS, STILL_EMOTION_AUS)
            for emotion, combinations in table.items() for combination in combinations}),
)
def test_flow_onset_to_apex_is_inside_the_action_units_with_the_requested_amplitude(identities, subject, emotion, action_units):
    amplitude = 2.5
    event = Event(Timing(2, 8, 14, 200.0), amplitude, action_units, emotion, "micro")
    renderer = Renderer(identities[subject], [event], DistractorPlan(fps=200.0), noise_seed=1)
    onset, apex = renderer.frame(2), renderer.frame(8)
    flow_vectors = _tvl1_flow(onset, apex)
    flow = np.hypot(flow_vectors[..., 0], flow_vectors[..., 1])
    truth_field = _field(renderer, 8)
    truth = _field_magnitude(renderer, 8)
    assert truth.max() == pytest.approx(amplitude, rel=1e-4)
    inside = truth > 0.5 * amplitude
    outside = truth == 0
    assert flow[inside].mean() > 20 * flow[outside].mean()
    # Measured motion = scale x rendered motion (least squares over the AU support). The rendered
    # peak is the requested amplitude, so the measured magnitude is scale x amplitude. (A peak
    # statistic of the flow would under-read: TV-L1's regularisation flattens sharp maxima.)
    scale = float((flow_vectors[inside] * truth_field[inside]).sum() / (truth_field[inside] ** 2).sum())
    assert scale == pytest.approx(1.0, abs=0.2)
    assert np.percentile(flow[inside], 99) == pytest.approx(amplitude, rel=0.25)
    # Distractors off: nothing outside the support moves at all, and flow there is ~0.
    neutral = np.rint(renderer.identity.image).astype(np.uint8)
    assert np.array_equal(apex[outside], neutral[outside])
    # (flow spills a little across the support's edge through TV-L1's image pyramid)
    far = cv2.erode(outside.astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool)
    assert flow[far].mean() < 0.05
    assert np.percentile(flow[far], 95) < 0.1


def test_frames_before_onset_and_after_offset_are_the_neutral_face(identities):
    event = Event(Timing(5, 9, 15, 100.0), 3.0, ("AU4", "AU7"), "disgust", "micro")
    renderer = Renderer(identities[0], [event], DistractorPlan(fps=100.0), noise_seed=1)
    frames = list(renderer.frames(20))
    moving = [i for i in range(20) if not np.array_equal(frames[i], frames[0])]
    assert moving == list(range(6, 15))
    strengths = [event.timing.strength(i) for i in range(20)]
    assert strengths[9] == 1.0 and max(strengths) == 1.0


def _long(identity, enabled, seed=3, duration=12.0, fps=30.0):
    settings = SynthSettings()
    settings = settings.model_copy(update={"distractors": settings.distractors.only(enabled)})
    streams = ClipStreams.spawn(seed, 2, 0, 0)
    return long_clip(identity, duration, fps, 2, 1, settings, streams, ("happiness", "surprise"))


def _changed_frames(clip):
    frames = list(clip.renderer().frames(clip.n_frames))
    return {i for i in range(1, clip.n_frames) if not np.array_equal(frames[i], frames[i - 1])}


def _event_frames(clip):
    return {i for e in clip.events for i in range(e.timing.onset + 1, e.timing.offset + 1)}


def test_blinks_change_only_the_logged_frames(identities):
    clip = _long(identities[0], {"blinks"})
    assert clip.distractors.blinks, "the plan should hold blinks for this seed"
    blink_frames = {i for b in clip.distractors.blinks for i in range(b.timing.onset + 1, b.timing.offset + 1)}
    assert _changed_frames(clip) == _event_frames(clip) | blink_frames
    # and a blink moves the eyelids down: flow at apex points down near the eyes
    blink = clip.distractors.blinks[0]
    renderer = clip.renderer()
    flow = cv2.optflow.DualTVL1OpticalFlow_create().calc(
        _gray(renderer.frame(blink.timing.onset)), _gray(renderer.frame(blink.timing.apex)), None)
    eyes = identities[0].landmarks[[37, 38, 43, 44]].round().astype(int)
    assert all(flow[y + 1, x, 1] > 0.3 * blink.amplitude_px for x, y in eyes)


def test_head_moves_change_only_the_logged_frames(identities):
    clip = _long(identities[1], {"head_motion"})
    moves = clip.distractors.head_moves
    assert moves
    move_frames = {i for m in moves for i in range(m.start + 1, m.end + 1)}
    assert _changed_frames(clip) == _event_frames(clip) | move_frames
    # after the last move the whole face has shifted by the logged pose: check with phase correlation
    renderer = clip.renderer()
    last = moves[-1]
    dx, dy, degrees = last.end_pose
    if abs(degrees) < 1.0:
        shift, _ = cv2.phaseCorrelate(_gray(renderer.frame(0)).astype(np.float64),
                                      _gray(renderer.frame(last.end)).astype(np.float64))
        assert shift == pytest.approx((dx, dy), abs=0.5)


def test_illumination_follows_the_logged_gain_and_offset(identities):
    clip = _long(identities[0], {"illumination"}, duration=4.0)
    log = clip.describe()["distractors"]["illumination"]
    renderer = clip.renderer()
    neutral = identities[0].image
    for index in (0, 40, 119):
        if any(e.timing.onset < index < e.timing.offset for e in clip.events):
            continue
        expected = np.clip(neutral * log["gain"][index] + log["offset"][index], 0, 255)
        assert np.abs(renderer.frame(index).astype(np.float32) - expected).max() <= 0.51
    assert len(set(log["gain"])) > 10  # it really drifts


def test_noise_is_seeded_and_changes_every_frame(identities):
    plan = DistractorPlan(fps=30.0, noise_sigma=2.0)
    a = Renderer(identities[0], [], plan, noise_seed=5)
    b = Renderer(identities[0], [], plan, noise_seed=5)
    c = Renderer(identities[0], [], plan, noise_seed=6)
    assert np.array_equal(a.frame(3), b.frame(3))
    assert not np.array_equal(a.frame(3), c.frame(3))
    assert not np.array_equal(a.frame(3), a.frame(4))
    residual = a.frame(3).astype(np.float32) - identities[0].image
    assert residual.std() == pytest.approx(2.0, rel=0.1)


def test_same_seed_same_plan_other_seed_other_plan(identities):
    one, two, other = (_long(identities[0], {"blinks", "head_motion"}, seed=s) for s in (3, 3, 4))
    assert one.describe() == two.describe()
    assert one.describe() != other.describe()
    assert np.array_equal(one.renderer().frame(100), two.renderer().frame(100))


def test_an_amplitude_that_would_fold_the_face_is_refused(identities):
    from engines.errors import InputError

    event = Event(Timing(1, 5, 9, 30.0), 80.0, ("AU12",), "happiness", "macro")
    with pytest.raises(InputError, match="fold"):
        Renderer(identities[0], [event], DistractorPlan(fps=30.0), noise_seed=0)
