"""bench/apex_blendshapes.py: real MediaPipe blendshapes, and a LOSO that never reads the held-out labels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench.apex_blendshapes import blendshape_scores, loso_probabilities
from streamer.faces import ModelFileMissing, face_landmarker_path
from training.synthetic.sources import SOURCE_LOADERS

MOUTH_SMILE = (44, 45)  # mouthSmileLeft, mouthSmileRight in MediaPipe's 52-blendshape order


def test_the_smiling_astronaut_smiles_and_grace_hopper_does_not(tmp_path):
    try:
        model = face_landmarker_path()
    except ModelFileMissing:
        pytest.skip("face_landmarker.task not installed (run scripts/fetch_face_landmarker.sh)")
    paths = []
    for name in ("astronaut", "grace_hopper"):
        paths.append(tmp_path / f"{name}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(SOURCE_LOADERS[name](), cv2.COLOR_RGB2BGR))
    scores = blendshape_scores(paths, model)
    assert scores.shape == (2, 52) and ((scores >= 0) & (scores <= 1)).all()
    assert scores[0, list(MOUTH_SMILE)].min() > 0.8  # measured 0.90 on both corners
    assert scores[1, list(MOUTH_SMILE)].max() < 0.1  # measured 0.006

    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit, match="broken.png: not a readable image"):
        blendshape_scores([tmp_path / "broken.png"], model)


def test_loso_learns_the_classes_and_never_reads_a_held_out_label():
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"s{i}" for i in range(6)], 12)
    labels = np.tile([0, 1, 2], 24)
    features = np.eye(3)[labels] * 3.0 + rng.normal(0.0, 0.5, (len(labels), 3))
    scores = loso_probabilities(features, labels, subjects)
    assert scores.shape == (72, 3) and np.allclose(scores.sum(axis=1), 1.0)
    assert (scores.argmax(axis=1) == labels).mean() > 0.95

    # Scrambling subject s0's own labels leaves s0's scores alone and moves every other subject's.
    scrambled = labels.copy()
    scrambled[subjects == "s0"] = rng.permutation(scrambled[subjects == "s0"])[::-1]
    changed = loso_probabilities(features, scrambled, subjects)
    assert np.array_equal(changed[subjects == "s0"], scores[subjects == "s0"])
    assert not np.allclose(changed[subjects != "s0"], scores[subjects != "s0"])
