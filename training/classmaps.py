"""Named class maps: how each dataset's own emotion labels group into a training task's classes.

Every dataset annotates emotions in its own vocabulary (CASME II 'repression', SAMM
'Contempt', SMIC 'ne'/'negative', CAS(ME)^3 'happy' ...). A class map names one
recognition task — its ordered classes (index = label id, the order published models
and label columns use) and, per source dataset, which own label goes to which class.
Own labels a map does not list are *dropped* by that task (no entry in
``Sample.labels``), which is how the published protocols exclude e.g. 'others'.

Where each grouping comes from:

* ``megc3`` — MEGC2019 cross-database composite (See et al., FG 2019; the 442-sample
  composite that STSTNet/HTNet train on, ids 0 negative, 1 positive, 2 surprise).
  CASME II: disgust + repression -> negative, happiness -> positive, surprise ->
  surprise; others / fear / sadness dropped. SAMM: anger, contempt, disgust, fear,
  sadness -> negative; happiness -> positive; surprise; 'other' dropped. SMIC-HS:
  its own negative / positive / surprise. The same rule (surprise stays, happiness
  is positive, 'others' dropped, every other emotion negative — LuYi8/EDMDBN
  ``merlib``, EDMDBN paper table 1) is applied to MMEW and CAS(ME)^3 so they can be
  trained together with the composite. Note: applied to the 2019 CASME II sheet this
  gives 90/32/28, not the composite's 88/32/25 — the composite was built from an older
  sheet; the ``megc2019-flow`` reader therefore takes the composite's own label column.
* ``casme2-5`` — the CASME II 5-class protocol (MMNet ``CASME2_5.py``, EDMDBN table 1):
  happiness, surprise, disgust, repression, others; fear and sadness dropped.
* ``samm-5`` — the SAMM 5-class protocol (MMNet table 1): anger, contempt, happiness,
  surprise, other; disgust, fear and sadness dropped.
* ``mmew-4`` — MMNet's MMEW ablation (MMNet paper table 1: 36/89/72/66): happiness,
  surprise, disgust, others; anger, fear and sadness dropped.
* ``casme3-7`` / ``casme3-3`` — CAS(ME)^3 part A as in HTNet's edited csv: the ids of
  its ``label_for_7`` column (1 happy, 2 surprise, 3 sad, 4 disgust, 5 fear, 6 anger;
  0 is 'others', removed from that csv) and of ``label_for_3`` (0 negative, 1
  positive, 2 surprise). The reader checks each row's columns against these maps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ClassMap:
    """One recognition task: ordered class names and, per dataset, own label -> class."""

    name: str
    classes: tuple[str, ...]
    groups: Mapping[str, Mapping[str, str]]

    def index(self, class_name: str) -> int:
        """The label id of ``class_name`` (its position in :attr:`classes`)."""
        try:
            return self.classes.index(class_name)
        except ValueError:
            raise KeyError(f"{class_name!r} is not a class of {self.name} ({', '.join(self.classes)})") from None

    def applies_to(self, dataset: str) -> bool:
        return dataset in self.groups

    def classify(self, dataset: str, emotion: str) -> str | None:
        """The class of ``emotion`` in ``dataset``; None when the task drops that emotion."""
        return self.groups.get(dataset, {}).get(emotion)


def _same(*names: str) -> dict[str, str]:
    return {name: name for name in names}


def _negative(*names: str) -> dict[str, str]:
    return {name: "negative" for name in names}


MEGC3 = ClassMap(
    name="megc3",
    classes=("negative", "positive", "surprise"),
    groups={
        "casme2": {**_negative("disgust", "repression"), "happiness": "positive", "surprise": "surprise"},
        "samm": {
            **_negative("anger", "contempt", "disgust", "fear", "sadness"),
            "happiness": "positive",
            "surprise": "surprise",
        },
        "smic": _same("negative", "positive", "surprise"),
        "mmew": {**_negative("anger", "disgust", "fear", "sadness"), "happiness": "positive", "surprise": "surprise"},
        "casme3": {**_negative("anger", "disgust", "fear", "sad"), "happy": "positive", "surprise": "surprise"},
    },
)

CASME2_5 = ClassMap(
    name="casme2-5",
    classes=("happiness", "surprise", "disgust", "repression", "others"),
    groups={"casme2": _same("happiness", "surprise", "disgust", "repression", "others")},
)

SAMM_5 = ClassMap(
    name="samm-5",
    classes=("anger", "contempt", "happiness", "surprise", "other"),
    groups={"samm": _same("anger", "contempt", "happiness", "surprise", "other")},
)

MMEW_4 = ClassMap(
    name="mmew-4",
    classes=("happiness", "surprise", "disgust", "others"),
    groups={"mmew": _same("happiness", "surprise", "disgust", "others")},
)

CASME3_7 = ClassMap(
    name="casme3-7",
    classes=("others", "happy", "surprise", "sad", "disgust", "fear", "anger"),
    groups={"casme3": _same("others", "happy", "surprise", "sad", "disgust", "fear", "anger")},
)

CASME3_3 = ClassMap(
    name="casme3-3",
    classes=("negative", "positive", "surprise"),
    groups={"casme3": MEGC3.groups["casme3"]},
)

# Each dataset's complete own vocabulary (lower-case), whether or not a map keeps the
# label: a reader rejects anything else as an unknown emotion.
EMOTIONS: dict[str, frozenset[str]] = {
    "casme2": frozenset({"happiness", "surprise", "disgust", "repression", "fear", "sadness", "others"}),
    "samm": frozenset({"anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise", "other"}),
    "smic": frozenset({"negative", "positive", "surprise"}),
    "mmew": frozenset({"happiness", "surprise", "disgust", "fear", "sadness", "anger", "others"}),
    "casme3": frozenset({"happy", "surprise", "sad", "disgust", "fear", "anger", "others"}),
}

CLASS_MAPS: dict[str, ClassMap] = {
    class_map.name: class_map for class_map in (MEGC3, CASME2_5, SAMM_5, MMEW_4, CASME3_7, CASME3_3)
}


def labels_for(dataset: str, emotion: str) -> dict[str, str]:
    """``Sample.labels`` for an own ``emotion`` of ``dataset``: every map that keeps it."""
    labels = {}
    for class_map in CLASS_MAPS.values():
        class_name = class_map.classify(dataset, emotion)
        if class_name is not None:
            labels[class_map.name] = class_name
    return labels

