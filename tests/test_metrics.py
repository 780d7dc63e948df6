import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion

from training.metrics import confusion_matrix, metrics_by_group, pooled_metrics, summaries

CLASSES = ("negative", "positive", "surprise")


@pytest.mark.parametrize("seed", range(20))
def test_pooled_metrics_match_sklearn_macro_scores(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(5, 400))
    y_true = rng.integers(0, 3, size)
    y_pred = np.where(rng.random(size) < 0.6, y_true, rng.integers(0, 3, size))
    report = pooled_metrics(y_true, y_pred, CLASSES)
    labels = sorted(set(y_true) | set(y_pred))
    assert report.uf1 == pytest.approx(f1_score(y_true, y_pred, average="macro", labels=labels))
    assert report.uar == pytest.approx(recall_score(y_true, y_pred, average="macro", labels=sorted(set(y_true))))
    assert report.acc == pytest.approx(accuracy_score(y_true, y_pred))
    np.testing.assert_array_equal(report.confusion, sk_confusion(y_true, y_pred, labels=[0, 1, 2]))
    per_class = recall_score(y_true, y_pred, average=None, labels=[0, 1, 2], zero_division=0)
    for index, name in enumerate(CLASSES):
        if (y_true == index).any():
            assert report.recall[name] == pytest.approx(per_class[index])


def test_hand_computed_example():
    # true:  n n n n p p s s ; pred: n n p s p p s n
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 1, 2, 1, 1, 2, 0]
    report = pooled_metrics(y_true, y_pred, CLASSES)
    assert report.confusion.tolist() == [[2, 1, 1], [0, 2, 0], [1, 0, 1]]
    assert report.recall == {"negative": 0.5, "positive": 1.0, "surprise": 0.5}
    # F1 = 2TP / (2TP + FP + FN): negative 4/7, positive 4/5, surprise 2/4
    assert report.f1["negative"] == pytest.approx(4 / 7)
    assert report.f1["positive"] == pytest.approx(0.8)
    assert report.f1["surprise"] == pytest.approx(0.5)
    assert report.uf1 == pytest.approx((4 / 7 + 0.8 + 0.5) / 3)
    assert report.uar == pytest.approx(2 / 3)
    assert report.acc == pytest.approx(5 / 8)
    assert report.support == {"negative": 4, "positive": 2, "surprise": 2}


def test_absent_class_is_left_out_of_uar_but_counts_in_uf1_when_predicted():
    report = pooled_metrics([0, 0, 1], [0, 2, 1], CLASSES)
    assert report.recall["surprise"] is None
    assert report.f1["surprise"] == 0.0
    assert report.uar == pytest.approx((0.5 + 1.0) / 2)
    assert report.uf1 == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_metrics_by_group_pools_each_dataset_separately():
    y_true = [0, 1, 2, 0, 1, 2]
    y_pred = [0, 1, 2, 1, 1, 0]
    groups = ["casme2", "casme2", "casme2", "samm", "samm", "samm"]
    reports = metrics_by_group(y_true, y_pred, groups, CLASSES)
    assert set(reports) == {"all", "casme2", "samm"}
    assert reports["casme2"].uf1 == pytest.approx(1.0)
    assert reports["samm"].acc == pytest.approx(1 / 3)
    assert reports["all"].samples == 6
    assert summaries(reports)["all"] == reports["all"].summary()


def test_bad_labels_are_rejected():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="equal length"):
        confusion_matrix([0, 1], [0], 3)
