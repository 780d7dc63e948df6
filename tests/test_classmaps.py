"""The class maps reproduce the published groupings and stay consistent with each vocabulary."""

from __future__ import annotations

import pytest

from training.classmaps import CLASS_MAPS, EMOTIONS, MEGC3, labels_for


def test_class_order_is_the_label_id_order_published_models_use():
    assert MEGC3.classes == ("negative", "positive", "surprise")
    assert [MEGC3.index(name) for name in MEGC3.classes] == [0, 1, 2]
    assert CLASS_MAPS["casme2-5"].classes == ("happiness", "surprise", "disgust", "repression", "others")
    assert CLASS_MAPS["samm-5"].classes == ("anger", "contempt", "happiness", "surprise", "other")
    assert CLASS_MAPS["mmew-4"].classes == ("happiness", "surprise", "disgust", "others")
    assert CLASS_MAPS["casme3-7"].index("happy") == 1 and CLASS_MAPS["casme3-7"].index("anger") == 6
    assert CLASS_MAPS["casme3-3"].classes == MEGC3.classes


def test_index_of_an_unknown_class_names_the_map():
    with pytest.raises(KeyError, match="megc3"):
        MEGC3.index("others")


@pytest.mark.parametrize(
    ("dataset", "emotion", "expected"),
    [
        ("casme2", "disgust", {"megc3": "negative", "casme2-5": "disgust"}),
        ("casme2", "repression", {"megc3": "negative", "casme2-5": "repression"}),
        ("casme2", "happiness", {"megc3": "positive", "casme2-5": "happiness"}),
        ("casme2", "others", {"casme2-5": "others"}),
        ("casme2", "fear", {}),
        ("casme2", "sadness", {}),
        ("samm", "contempt", {"megc3": "negative", "samm-5": "contempt"}),
        ("samm", "disgust", {"megc3": "negative"}),
        ("samm", "other", {"samm-5": "other"}),
        ("smic", "surprise", {"megc3": "surprise"}),
        ("mmew", "anger", {"megc3": "negative"}),
        ("mmew", "others", {"mmew-4": "others"}),
        ("casme3", "sad", {"megc3": "negative", "casme3-7": "sad", "casme3-3": "negative"}),
        ("casme3", "happy", {"megc3": "positive", "casme3-7": "happy", "casme3-3": "positive"}),
    ],
)
def test_labels_for_keeps_or_drops_each_emotion_as_published(dataset, emotion, expected):
    assert labels_for(dataset, emotion) == expected


def test_every_map_groups_only_known_emotions_into_its_own_classes():
    for class_map in CLASS_MAPS.values():
        for dataset, groups in class_map.groups.items():
            assert set(groups) <= EMOTIONS[dataset], (class_map.name, dataset)
            assert set(groups.values()) <= set(class_map.classes), (class_map.name, dataset)
