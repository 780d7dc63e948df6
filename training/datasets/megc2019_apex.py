"""The MEGC2019 composite's apex face crops: the same 442 samples as ``megc2019-flow``, other frames.

The HTNet release ships, beside each sample's 28x28 flow image, the 224x224 RGB JPEG face
crop of its apex frame (``datasets/combined_datasets_whole/<imagename>``). This reader is the
flow reader with ``frames[0]`` set to that crop: the same sheet, subjects, sample keys and
``megc3`` labels, so LOSO folds and results line up with the flow models' sample for sample.
A sample whose crop is missing has no frames. One crop per clip: models that need the clip
(magnification, several frames) cannot be trained on it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from training.datasets import megc2019_flow
from training.samples import Sample

NAME = "megc2019-apex"
DEFAULT_SHEETS = megc2019_flow.DEFAULT_SHEETS


def read(root: Path | None, sheet: Path) -> list[Sample]:
    samples = []
    for sample in megc2019_flow.read(root, sheet):
        apex = sample.attributes.get("apex_image")
        frames = (Path(apex),) if apex else ()
        samples.append(dataclasses.replace(sample, dataset=NAME, frames=frames))
    return samples
