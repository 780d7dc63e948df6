"""The pictures in docs/synthetic.md: apex frame and amplified apex - onset difference, per MEGC class.

Made from synthetic frames only (the bundled public-domain photos), never from dataset
images. Run ``python -m training.synthetic.figures [OUT_DIR]`` to regenerate them.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from training.synthetic.distractors import DistractorPlan
from training.synthetic.events import Event, Timing
from training.synthetic.identities import make_identity, subject_params
from training.synthetic.render import Renderer

log = logging.getLogger(__name__)

PANEL = 192
AMPLITUDE_PX = 4.0
DIFFERENCE_GAIN = 6.0
# class -> (subject index, emotion, action units) shown in the picture
EXAMPLES = {
    "positive": (0, "happiness", ("AU6", "AU12")),
    "surprise": (1, "surprise", ("AU1", "AU2", "AU5", "AU26")),
    "negative": (2, "disgust", ("AU9", "AU10")),
}


def class_figure(subject: int, emotion: str, action_units: tuple[str, ...], seed: int = 0) -> np.ndarray:
    """Grey apex frame beside the amplified absolute difference apex - onset (white = change)."""
    identity = make_identity(f"sub{subject + 1:02d}", subject_params(subject, seed), (PANEL, PANEL), 0.6)
    event = Event(Timing(0, 5, 10, 200.0), AMPLITUDE_PX, action_units, emotion, "micro")
    renderer = Renderer(identity, [event], DistractorPlan(fps=200.0), noise_seed=0)
    onset = cv2.cvtColor(renderer.frame(0), cv2.COLOR_BGR2GRAY)
    apex = cv2.cvtColor(renderer.frame(5), cv2.COLOR_BGR2GRAY)
    difference = np.clip(np.abs(apex.astype(np.float32) - onset) * DIFFERENCE_GAIN, 0, 255).astype(np.uint8)
    figure = np.hstack([apex, np.full((PANEL, 4), 255, np.uint8), difference])
    label = f"{emotion}: {'+'.join(action_units)}"
    cv2.putText(figure, label, (4, PANEL - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1, cv2.LINE_AA)
    return figure


def write_figures(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (subject, emotion, action_units) in EXAMPLES.items():
        path = out_dir / f"synthetic_{name}.png"
        cv2.imwrite(str(path), class_figure(subject, emotion, action_units), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        paths.append(path)
        log.info("wrote %s", path)
    return paths


if __name__ == "__main__":  # pragma: no cover - a documentation helper
    logging.basicConfig(level=logging.INFO)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "docs" / "images"
    write_figures(target)
