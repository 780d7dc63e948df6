"""Does the apex frame's appearance carry the class? MediaPipe blendshapes of the composite's apex crops, LOSO.

Run from the repository root::

    .venv/bin/python -m bench.apex_blendshapes --root ../shared/data/HTNet [--json]

Each of the composite's 442 samples has, beside its onset->apex flow image, a 224x224 crop of its
apex frame (``megc2019-apex``). MediaPipe's FaceLandmarker scores 52 expression blendshapes
(brow down, smile, jaw open, ...) on each crop: a pretrained expression model, the only one
installed here. A logistic regression on those scores (standardised on the training subjects,
classes balanced, C = 1, settings fixed before the first run) is trained and scored with
leave-one-subject-out, pooled as MEGC does. Nothing is chosen on a held-out subject.

A micro-expression's apex differs from the same person's neutral face by a few pixels, and the
composite has no onset frame to subtract, so the blendshapes mostly describe the person:
the result (docs/results.md) says whether that is enough to add to the flow models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from streamer.faces.model_files import face_landmarker_path
from training.classmaps import MEGC3
from training.datasets import megc2019_apex
from training.metrics import metrics_by_group, summaries


def blendshape_scores(images: list[Path], model_path: Path) -> np.ndarray:
    """(n, 52) blendshape scores, one row per image; a crop with no face found is an error naming it."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(model_path)),
                                           output_face_blendshapes=True, num_faces=1,
                                           min_face_detection_confidence=0.1, min_face_presence_confidence=0.1)
    rows = []
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        for path in images:
            image = cv2.imread(str(path))
            if image is None:
                raise SystemExit(f"{path}: not a readable image")
            result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                data=cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
            if not result.face_blendshapes:
                raise SystemExit(f"{path}: MediaPipe found no face")
            rows.append([category.score for category in result.face_blendshapes[0]])
    return np.asarray(rows, dtype=np.float64)


def loso_probabilities(features: np.ndarray, labels: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """Held-out class probabilities: for each subject, a model fitted on every other subject."""
    scores = np.zeros((len(labels), len(MEGC3.classes)))
    for subject in np.unique(subjects):
        test = subjects == subject
        scaler = StandardScaler().fit(features[~test])
        classifier = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000)
        classifier.fit(scaler.transform(features[~test]), labels[~test])
        scores[np.ix_(test, classifier.classes_)] = classifier.predict_proba(scaler.transform(features[test]))
    return scores


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the HTNet release folder (its sheet and apex crops)")
    parser.add_argument("--model", type=Path, default=None, help="face_landmarker.task (default: mer's search)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    root = Path(args.root)
    samples = megc2019_apex.read(root, root / megc2019_apex.DEFAULT_SHEETS[0])
    missing = [sample.sample_id for sample in samples if not sample.frames]
    if missing:
        raise SystemExit(f"{root}: no apex crop for {len(missing)} samples, e.g. {missing[0]}")
    features = blendshape_scores([sample.frames[0] for sample in samples], args.model or face_landmarker_path())
    labels = np.array([MEGC3.classes.index(sample.emotion) for sample in samples])
    subjects = np.array([f"{sample.source}/{sample.subject}" for sample in samples])
    predicted = loso_probabilities(features, labels, subjects).argmax(axis=1)
    metrics = summaries(metrics_by_group(labels, predicted, [sample.source for sample in samples], MEGC3.classes))
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    for group, values in metrics.items():
        print(f"{group}: UF1 {values['uf1']:.4f}  UAR {values['uar']:.4f}  acc {values['acc']:.4f}")


if __name__ == "__main__":
    main()
