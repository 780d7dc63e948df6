"""Score averaging as one model: several registry models with one input contract, their probabilities averaged.

The best honest result on the composite is an average of several runs' held-out probabilities
(``mer ensemble``, docs/results.md). This model is that average as something one can export and
serve: each member is a registry model (``{"model": NAME, "args": {...}}``), all members read
the same input (same shape, channels, value range, normalisation, motion), and the output is
``log(mean_m softmax(member_m(x)))``. Its softmax, which every exported engine applies, is
exactly the mean of the members' probabilities, so an engine built from the members' checkpoints
(``mer export --checkpoint A --checkpoint B ...``) scores a sample as ``mer ensemble`` does.

Trained with ``mer train`` it is a mixture whose members learn jointly (cross-entropy of the
averaged probabilities), a different thing from averaging separately trained runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from engines.errors import InputError
from engines.models.registry import create_model, register_model
from engines.models.ststnet import MEGC2019_LABELS

__all__ = ["ScoreAverage", "score_average", "INPUT_CONTRACT"]

# The ModelCfg fields that say what a model reads: members must agree on all of them.
INPUT_CONTRACT = ("input_size", "channel_order", "channels", "value_range", "mean", "std", "motion", "clip")
# The composite's two strongest recipes of different architecture (docs/results.md).
DEFAULT_MEMBERS = ({"model": "ststnet"}, {"model": "off_apexnet"})


def _member_spec(spec: Mapping[str, Any], index: int) -> tuple[str, dict]:
    """(model name, builder options) of one ``members`` entry; a malformed entry names its index."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("model"), str) or set(spec) - {"model", "args"}:
        raise InputError(f'members[{index}] must be {{"model": NAME, "args": {{...}}}}, got {spec!r}',
                         column="members")
    args = dict(spec.get("args") or {})
    if "label_names" in args:
        raise InputError(f"members[{index}] sets label_names: the ensemble's label_names apply to every member",
                         column="members")
    return spec["model"], args


class ScoreAverage(nn.Module):
    """The mean of the members' class probabilities, returned as log-probabilities (see the module doc).

    ``forward_features`` gives the members' logits side by side, (N, M * K); ``forward_head``
    averages their softmaxes. Closed-form members (the SVM baselines) are refused: they are
    fitted, not trained, and score with margins rather than probabilities.
    """

    def __init__(
        self,
        members: Sequence[Mapping[str, Any]] = DEFAULT_MEMBERS,
        label_names: tuple[str, ...] = MEGC2019_LABELS,
    ) -> None:
        super().__init__()
        if len(members) < 2:
            raise InputError(f"an ensemble needs at least two members, got {len(members)}", column="members")
        label_names = tuple(label_names)
        built, specs = [], []
        for index, spec in enumerate(members):
            name, args = _member_spec(spec, index)
            specs.append({"model": name, "args": args})
            model = create_model(name, **args, label_names=label_names)
            if getattr(model, "closed_form", False):
                raise InputError(f"members[{index}] ({name}) is a closed-form model; only trained models average",
                                 column="members")
            first = built[0].cfg if built else model.cfg
            differing = [key for key in INPUT_CONTRACT if getattr(model.cfg, key) != getattr(first, key)]
            if differing:
                raise InputError(f"members[{index}] ({name}) reads another input than members[0] "
                                 f"({first.name}): {', '.join(differing)} differ", column="members")
            built.append(model)
        self.members = nn.ModuleList(built)
        self.member_specs = specs  # what rebuilds the members (the engine manifest records it)
        self.num_classes = len(label_names)
        self.num_features = len(built) * self.num_classes
        names = " + ".join(model.cfg.name for model in built)
        self.cfg = dataclasses.replace(
            built[0].cfg,
            name="score_average",
            source_url=" ".join(dict.fromkeys(model.cfg.source_url for model in built if model.cfg.source_url)),
            paper=f"score averaging of {names} (each member's own paper applies)",
            license_note="this project's combination; each member's licence applies",
            train_datasets=tuple(dict.fromkeys(d for model in built for d in model.cfg.train_datasets)),
            notes=f"mean of the softmax probabilities of {len(built)} members: {names}",
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) input -> (N, M * K): every member's logits, member after member."""
        return torch.cat([member(x) for member in self.members], dim=1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(N, M * K) member logits -> (N, K) log of the mean probability (or the logits if ``pre_logits``)."""
        if pre_logits:
            return features
        # log(mean_m p_m) = logsumexp_m(log p_m) - log M: finite even where a member's probability underflows.
        log_probabilities = torch.log_softmax(features.unflatten(1, (len(self.members), self.num_classes)), dim=2)
        return torch.logsumexp(log_probabilities, dim=1) - math.log(len(self.members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def score_average(
    members: Sequence[Mapping[str, Any]] = DEFAULT_MEMBERS,
    label_names: tuple[str, ...] = MEGC2019_LABELS,
) -> ScoreAverage:
    """Several registry models on one input, their probabilities averaged (default: STSTNet + OFF-ApexNet)."""
    return ScoreAverage(members, label_names)
