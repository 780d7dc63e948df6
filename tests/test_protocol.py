import pytest

from training.protocol import leave_one_subject_out, natural_key, validation_subjects
from training.samples import Sample


def _samples(subjects):
    return [Sample(dataset="x", subject=s, sample_id=f"c{i}", emotion="happiness") for i, s in enumerate(subjects)]


def test_one_fold_per_subject_in_natural_order_covering_every_sample_once():
    samples = _samples(["sub10", "sub2", "sub2", "sub1", "sub10", "sub10"])
    folds = leave_one_subject_out(samples)
    assert [fold.test_subject for fold in folds] == ["sub1", "sub2", "sub10"]
    assert [fold.test for fold in folds] == [(3,), (1, 2), (0, 4, 5)]
    for fold in folds:
        assert set(fold.train).isdisjoint(fold.test)
        assert sorted(fold.train + fold.test) == list(range(len(samples)))
        assert all(samples[i].subject != fold.test_subject for i in fold.train)


def test_folds_are_deterministic_and_subset_selectable():
    samples = _samples(["a", "b", "c", "a"])
    assert leave_one_subject_out(samples) == leave_one_subject_out(list(samples))
    assert [f.test_subject for f in leave_one_subject_out(samples, ["c", "a"])] == ["c", "a"]
    with pytest.raises(ValueError, match="no samples for subject"):
        leave_one_subject_out(samples, ["zz"])


def test_validation_subjects_come_from_training_subjects_only():
    train = ["s1", "s2", "s3", "s4", "s5", "s1"]
    chosen = validation_subjects(train, 0.4, seed=3)
    assert len(chosen) == 2 and set(chosen) <= set(train)
    assert chosen == validation_subjects(train, 0.4, seed=3)
    assert validation_subjects(["a", "b"], 0.9, seed=0) in {("a",), ("b",)}
    with pytest.raises(ValueError):
        validation_subjects(["a"], 0.5, seed=0)


def test_natural_key():
    assert sorted(["s10", "s9", "006", "sub01"], key=natural_key) == ["006", "s9", "s10", "sub01"]
