"""The engine shipped with mer: trained on synthetic data only, loadable, and honest about it."""

import numpy as np

from engines.manifest import read_manifest
from streamer.recognizer import Recognizer, default_engine_dir
from training.default_engine import FLOW_METHOD, FLOW_PARAMS, FLOW_SIZE


def test_manifest_says_synthetic_only_and_matches_the_builder_settings():
    manifest = read_manifest(default_engine_dir())
    training = manifest.data["training"]
    assert training["real_data"] is False and training["datasets"] == ["synthetic (mer synth clips)"]
    assert "synthetic" in manifest.data["source"]["note"]
    assert manifest.class_names == ("negative", "positive", "surprise")
    pre = manifest.preprocessing
    assert (pre["flow_method"], pre["flow_params"], pre["flow_size"]) == (FLOW_METHOD, FLOW_PARAMS, list(FLOW_SIZE))
    assert 0.5 < manifest.data["metrics"]["synthetic_loso"]["uf1"] <= 1.0


def test_recognizer_classifies_a_pair_with_the_shipped_engine():
    recognizer = Recognizer()  # verifies every file's sha256 on load
    assert recognizer.engine_id.startswith("ststnet@synthetic")
    rng = np.random.default_rng(0)
    onset = rng.integers(0, 256, (128, 128), dtype=np.uint8)
    apex = np.roll(onset, 1, axis=1)
    result = recognizer.classify(onset, apex)
    assert set(result.scores) == set(recognizer.class_names)
    assert abs(sum(result.scores.values()) - 1.0) < 1e-4
    assert result.label == max(result.scores, key=result.scores.get)
    assert result.motion_s > 0 and result.inference_s > 0
