"""Onset/apex jitter: training on frames drawn near the labelled onset and apex (MMNet, paper 003).

MMNet trains on "a frame from four frames around the labeled onset and apex frame"; its public
code draws the onset from [onset, onset + j] and the apex from [apex - j, apex], with
j = floor(0.15 * (apex - onset) / 4). A model sample holds only its two frames, so the jitter
lives on the data side: every training sample's candidate onset and apex frames are built once
from its ``mer prepare`` clip (by ``engines.clip_input.build_clip_input``, the function that
builds every clip input, live ones too), and each epoch the trainer draws one onset and one
apex per training sample (:meth:`JitteredInputs.draw`). Indexing gives the labelled frames,
which validation and the held-out subject always get.

Rules (a model option, ``anchor_jitter``): ``code``, the public code's span above; ``paper``,
the labelled frame or one of the next three (four frames, inwards as the code does);
``none``. The span never lets the onset reach the apex.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from engines.clip_spec import ClipSpec
from engines.errors import InputError
from training.samples import Sample

__all__ = ["JITTER_RULES", "JitteredInputs", "jitter_span", "jittered_inputs"]

JitterRule = Literal["none", "code", "paper"]
JITTER_RULES: tuple[str, ...] = ("none", "code", "paper")
PAPER_CANDIDATES = 4  # "a frame from four frames around the labeled onset and apex frame"


def jitter_span(rule: str, onset: int, apex: int) -> int:
    """How many frames past the labelled onset (and before the labelled apex) may be drawn."""
    if rule not in JITTER_RULES:
        raise ValueError(f"anchor_jitter must be one of {', '.join(JITTER_RULES)}, got {rule!r}")
    if rule == "none":
        return 0
    span = (15 * (apex - onset)) // 400 if rule == "code" else PAPER_CANDIDATES - 1  # floor(0.15 (apex-onset) / 4)
    return max(0, min(span, (apex - onset - 1) // 2))


class JitteredInputs:
    """A model's inputs with, per sample, the candidate onset and apex frames an epoch draws from.

    ``inputs[index]`` gives the samples with their labelled frames (as the plain tensor would);
    ``draw(indices, generator)`` gives them with one candidate onset and apex drawn per sample.
    ``onsets[i]`` / ``apexes[i]`` are ``(span + 1, C, S, S)`` (the labelled frame first), or
    None where the span is 0.
    """

    def __init__(self, labelled: torch.Tensor, onsets: Sequence[torch.Tensor | None],
                 apexes: Sequence[torch.Tensor | None]) -> None:
        self.labelled = labelled
        self.onsets = list(onsets)
        self.apexes = list(apexes)

    def __getitem__(self, index) -> torch.Tensor:
        return self.labelled[index]

    def __len__(self) -> int:
        return len(self.labelled)

    @property
    def shape(self) -> torch.Size:
        return self.labelled.shape

    def draw(self, indices: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """``(len(indices), 2, C, S, S)``: the samples, each with a random candidate onset and apex."""
        batch = self.labelled[list(indices)].clone()
        for row, index in enumerate(indices):
            for frame, candidates in ((0, self.onsets[index]), (1, self.apexes[index])):
                if candidates is not None:
                    pick = int(torch.randint(len(candidates), (1,), generator=generator))
                    batch[row, frame] = candidates[pick]
        return batch


def jittered_inputs(labelled: torch.Tensor, samples: Sequence[Sample], spec: ClipSpec, rule: str) -> JitteredInputs:
    """The candidates of every sample, from its ``mer prepare`` clip (see the module docstring)."""
    from engines.clip_input import build_clip_input
    from training.datasets.prepared import clip_path, load_clip

    if spec.frames != 2 or spec.anchors != "onset_apex" or spec.magnify or spec.flow:
        raise InputError("onset/apex jitter draws the two frames of an onset-apex model (MMNet); "
                         f"this model's clips are {spec.frames} frame(s) of {spec.anchors}")
    onsets: list[torch.Tensor | None] = []
    apexes: list[torch.Tensor | None] = []
    for sample in samples:
        path = clip_path(sample)
        clip = load_clip(path)
        span = jitter_span(rule, clip.onset, clip.apex)
        if span == 0:
            onsets.append(None)
            apexes.append(None)
            continue

        def frame_at(index: int, clip=clip) -> torch.Tensor:
            # A clip whose onset and apex are both ``index`` is that frame twice, made as every input is.
            return torch.from_numpy(build_clip_input(clip.frames, index, index, clip.offset, spec, clip.fps)[0])

        try:
            onsets.append(torch.stack([frame_at(clip.onset + step) for step in range(span + 1)]))
            apexes.append(torch.stack([frame_at(clip.apex - step) for step in range(span + 1)]))
        except InputError as exc:
            raise InputError(exc.reason, path=path, column=exc.column) from exc
    return JitteredInputs(labelled, onsets, apexes)
