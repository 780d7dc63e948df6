"""The zoo's shared linear SVM (engines/models/linear_svm.py): scikit-learn's decision function
as a torch layer, standardisation folded in, class weights, absent classes, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.errors import MerError
from engines.models.linear_svm import ABSENT_CLASS_SCORE, LinearSVMHead, NotFittedError, fit_linear_svm
from training.trainer import _class_weights


def _separable(n: int, classes: int, seed: int, scales=(1.0,) * 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    features = rng.normal(size=(n, 6))
    features[np.arange(n), labels] += 4.0
    features *= scales
    return features, labels


def test_head_reproduces_sklearns_standardised_linear_svm_and_refits_identically() -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    scales = (1.0, 1.0, 1.0, 10.0, 100.0, 0.01)  # features in units 10^4 apart
    features, labels = _separable(60, 3, seed=0, scales=scales)
    class_weight = torch.tensor([1.0, 2.0, 0.5])
    head = LinearSVMHead(6, 3, c=0.5, standardize=True)
    fitted = head.fit(torch.from_numpy(features), torch.from_numpy(labels), class_weight, seed=3)
    assert fitted.estimator.class_weight == {0: 1.0, 1: 2.0, 2: 0.5} and fitted.estimator.random_state == 3
    reference = make_pipeline(StandardScaler(), LinearSVC(C=0.5, loss="hinge", class_weight={0: 1.0, 1: 2.0, 2: 0.5},
                                                          random_state=3, max_iter=100_000))
    reference.fit(features, labels)
    test = _separable(20, 3, seed=1, scales=scales)[0]
    with torch.no_grad():
        ours = head(torch.from_numpy(test).float()).numpy()
    np.testing.assert_allclose(ours, reference.decision_function(test), atol=1e-4)
    np.testing.assert_array_equal(ours.argmax(1), reference.predict(test))
    assert bool(head.state_dict()["fitted"])  # the flag travels in checkpoints
    again = LinearSVMHead(6, 3, c=0.5, standardize=True)
    again.fit(torch.from_numpy(features), torch.from_numpy(labels), class_weight, seed=3)
    assert torch.equal(again.linear.weight, head.linear.weight) and torch.equal(again.linear.bias, head.linear.bias)


def test_trainers_balanced_weights_give_sklearns_balanced_svm() -> None:
    from sklearn.svm import LinearSVC

    features, labels = _separable(50, 3, seed=2)
    labels[:8] = 0  # unequal classes
    weights = _class_weights(torch.from_numpy(labels), 3, "balanced")
    fitted = fit_linear_svm(features, labels, 3, weights, seed=0)
    reference = LinearSVC(loss="hinge", class_weight="balanced", random_state=0, max_iter=100_000).fit(features, labels)
    # Equal up to the float32 rounding of the trainer's weights.
    np.testing.assert_allclose(fitted.weight, reference.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fitted.bias, reference.intercept_, rtol=1e-5, atol=1e-6)


def test_two_classes_keep_sklearns_decision_and_an_absent_class_is_never_chosen() -> None:
    from sklearn.svm import LinearSVC

    features, labels = _separable(40, 2, seed=4)
    fitted = fit_linear_svm(features, labels, 3, None, seed=0)
    reference = LinearSVC(loss="hinge", random_state=0, max_iter=100_000).fit(features, labels)
    scores = features @ fitted.weight.T + fitted.bias
    np.testing.assert_allclose(scores[:, 1] - scores[:, 0], reference.decision_function(features), atol=1e-9)
    assert (scores[:, 2] == ABSENT_CLASS_SCORE).all() and (scores.argmax(1) == reference.predict(features)).all()


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (np.ones((40, 6)), np.zeros(40, dtype=int), "two classes or more, got only"),
        (np.full((40, 6), np.nan), np.arange(40) % 2, "NaN"),
        (np.ones((40, 6)), np.arange(40) % 4, r"class indices 0\.\.2, got \[0, 1, 2, 3\]"),
        (np.ones((40, 6)), np.arange(39) % 2, "one label per row"),
    ],
)
def test_bad_training_sets_are_refused(features, labels, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_linear_svm(features, labels, 3)


def test_an_unfitted_head_refuses_to_predict_with_a_one_line_error() -> None:
    head = LinearSVMHead(6, 3)
    with pytest.raises(NotFittedError, match="not fitted yet") as caught:
        head(torch.zeros(2, 6))
    assert isinstance(caught.value, MerError)  # the command line reports it as one line
    with pytest.raises(ValueError, match="C must be > 0"):
        LinearSVMHead(6, 3, c=0.0)
