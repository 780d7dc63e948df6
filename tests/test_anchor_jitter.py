"""MMNet's onset/apex jitter: the spans of both rules, the candidates built from cached clips, the
draws, and training with them (deterministic, held-out frames untouched)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.clip_input import build_clip_input
from engines.clip_spec import ClipSpec
from engines.errors import InputError
from engines.models import create_model
from engines.models.mmnet import ANCHOR_JITTER_RULES
from training.anchor_jitter import JITTER_RULES, JitteredInputs, jitter_span, jittered_inputs
from training.inputs import load_model_inputs
from training.protocol import leave_one_subject_out
from training.recipes import TrainRecipe
from training.samples import Sample
from training.trainer import train_fold

SIZE = 16  # MMNet's smallest image size (a multiple of its grid stride)
MODEL_OPTIONS = {"image_size": SIZE, "stem_width": 4, "base_width": 4, "num_heads": 1, "num_layers": 1}


def test_the_rules_spans():
    assert JITTER_RULES == ANCHOR_JITTER_RULES
    # The public code: floor(0.15 * (apex - onset) / 4).
    assert [jitter_span("code", 10, 10 + d) for d in (20, 26, 27, 40, 53, 54, 100)] == [0, 0, 1, 1, 1, 2, 3]
    # The paper: the labelled frame or one of the next three, never reaching the other anchor.
    assert [jitter_span("paper", 0, d) for d in (1, 2, 3, 5, 7, 8, 40)] == [0, 0, 1, 2, 3, 3, 3]
    assert jitter_span("none", 0, 100) == 0
    with pytest.raises(ValueError, match="anchor_jitter must be one of none, code, paper"):
        jitter_span("random", 0, 10)


def _clip(path, length, onset, apex, seed):
    """A cached clip as ``mer prepare`` writes it: RGB crops whose every frame is recognisable."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (length, SIZE, SIZE, 3), dtype=np.uint8)
    np.savez(path, frames=frames, onset=onset, apex=apex, offset=length - 1, fps=30.0)
    return frames


@pytest.fixture
def clips(tmp_path):
    """Four subjects' clips: two long enough for a jitter of 1 frame (code rule), two too short."""
    samples, frames = [], []
    for number, (length, onset, apex) in enumerate([(40, 2, 32), (12, 1, 8), (45, 3, 33), (10, 1, 6)]):
        path = tmp_path / f"clip{number}.npz"
        frames.append(_clip(path, length, onset, apex, number))
        samples.append(Sample("prepared", f"s{number}", f"c{number}", "x", frames=(path,),
                              labels={"casme2-5": ("happiness", "surprise")[number % 2]}))
    return samples, frames


def _inputs(samples, rule):
    cfg = create_model("mmnet", **MODEL_OPTIONS).cfg
    return load_model_inputs(cfg, "prepared", samples, anchor_jitter=rule)


def test_candidates_are_the_frames_next_to_the_labelled_ones(clips):
    samples, frames = clips
    spec = create_model("mmnet", **MODEL_OPTIONS).cfg.clip
    plain = _inputs(samples, "none")
    jittered = _inputs(samples, "code")
    assert isinstance(plain, torch.Tensor) and isinstance(jittered, JitteredInputs)
    assert torch.equal(jittered[[0, 2]], plain[[0, 2]]) and jittered.shape == plain.shape
    assert jittered.onsets[1] is None and jittered.apexes[3] is None  # too short for the code's rule
    anchors = {0: (2, 32), 2: (3, 33)}
    for index, (onset, apex) in anchors.items():
        expected_onsets = [build_clip_input(frames[index], onset + k, apex, None, spec)[0] for k in (0, 1)]
        expected_apexes = [build_clip_input(frames[index], onset, apex - k, None, spec)[1] for k in (0, 1)]
        assert np.array_equal(jittered.onsets[index].numpy(), np.stack(expected_onsets))
        assert np.array_equal(jittered.apexes[index].numpy(), np.stack(expected_apexes))


def test_draws_cover_the_candidates_and_repeat_for_a_seed(clips):
    samples, _ = clips
    jittered = _inputs(samples, "paper")
    assert all(len(candidates) == 4 for candidates in jittered.onsets[:1] + jittered.onsets[2:3])
    draws = [jittered.draw([0, 1, 2, 3], torch.Generator().manual_seed(seed)) for seed in range(60)]
    again = jittered.draw([0, 1, 2, 3], torch.Generator().manual_seed(7))
    assert torch.equal(again, draws[7])
    for index in range(4):
        onsets, apexes = jittered.onsets[index], jittered.apexes[index]
        picked_onsets = {int(torch.nonzero((onsets == d[index, 0]).flatten(1).all(1))[0]) for d in draws}
        picked_apexes = {int(torch.nonzero((apexes == d[index, 1]).flatten(1).all(1))[0]) for d in draws}
        assert picked_onsets == set(range(len(onsets))) and picked_apexes == set(range(len(apexes)))


def test_jitter_needs_an_onset_apex_model_and_cached_clips(clips):
    samples, _ = clips
    nine_frames = ClipSpec(frames=9, anchors="onset_apex_offset", size=SIZE, color="rgb")
    with pytest.raises(InputError, match="draws the two frames of an onset-apex model"):
        jittered_inputs(torch.zeros(4, 9, 3, SIZE, SIZE), samples, nine_frames, "code")
    with pytest.raises(InputError, match="is not from a mer prepare cache"):  # a clip model's input needs one anyway
        jittered_inputs(torch.zeros(1, 2, 3, SIZE, SIZE), [Sample("casme2", "s1", "c", "x", frames=())],
                        create_model("mmnet", **MODEL_OPTIONS).cfg.clip, "code")


def test_training_draws_jittered_frames_deterministically_and_scores_the_labelled_ones(clips):
    samples, _ = clips
    recipe = TrainRecipe(model="mmnet", epochs=3, batch_size=3, optimizer="adamw", lr=1e-2,
                         model_options=MODEL_OPTIONS, seed=3)
    labels = torch.tensor([i % 2 for i in range(4)])
    subjects = [s.subject for s in samples]
    fold = leave_one_subject_out(samples)[0]
    names = ("happiness", "surprise")

    def run(inputs):
        return train_fold(recipe, fold, inputs, labels, subjects, names)

    plain, jittered = _inputs(samples, "none"), _inputs(samples, "paper")
    first, second, without = run(jittered), run(jittered), run(plain)
    assert np.array_equal(first.scores, second.scores)  # the same seed draws the same frames
    assert not np.array_equal(first.scores, without.scores)  # other frames were trained on
    # With nothing to draw (every span 0) the run is the plain one, bit for bit.
    idle = JitteredInputs(plain, [None] * 4, [None] * 4)
    assert np.array_equal(run(idle).scores, without.scores)
