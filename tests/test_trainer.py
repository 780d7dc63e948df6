"""The LOSO trainer on a small learnable task built in memory (no dataset needed)."""

import json

import numpy as np
import pytest
import torch

from training.protocol import leave_one_subject_out
from training.recipes import TrainRecipe, load_recipe
from training.reports import Predictions, write_run_outputs
from training.samples import Sample
from training.trainer import fold_seed, run_folds, train_fold

CLASSES = ("negative", "positive", "surprise")


def _task(subjects=6, per_subject=9, seed=0):
    """Class c brightens channel c: easy to learn, so a trained fold must beat chance."""
    rng = np.random.default_rng(seed)
    samples, images, labels = [], [], []
    for s in range(subjects):
        for i in range(per_subject):
            label = i % 3
            image = rng.uniform(0, 120, (3, 28, 28)).astype(np.float32)
            image[label] += 100
            samples.append(Sample(dataset="toy", subject=f"s{s}", sample_id=f"c{i}", emotion=CLASSES[label], source="toy"))
            images.append(image)
            labels.append(label)
    return samples, torch.from_numpy(np.stack(images)), torch.tensor(labels)


RECIPE = TrainRecipe(model="ststnet", epochs=60, batch_size=16, lr=3e-3, seed=1)


def test_trained_folds_beat_chance_and_are_deterministic():
    samples, inputs, labels = _task()
    folds = leave_one_subject_out(samples)[:2]
    subjects = [s.subject for s in samples]
    first = run_folds(RECIPE, folds, inputs, labels, subjects, CLASSES, workers=1, progress=False)
    again = run_folds(RECIPE, folds[::-1], inputs, labels, subjects, CLASSES, workers=1, progress=False)
    for result, repeat in zip(first, again[::-1]):
        assert result.test_subject == repeat.test_subject
        np.testing.assert_array_equal(result.scores, repeat.scores)
    predicted = np.concatenate([r.scores.argmax(1) for r in first])
    truth = np.concatenate([labels[list(f.test)].numpy() for f in folds])
    assert (predicted == truth).mean() > 0.6  # chance is 1/3


def test_parallel_workers_give_the_serial_result():
    samples, inputs, labels = _task(subjects=3, per_subject=6)
    recipe = RECIPE.model_copy(update={"epochs": 5})
    folds = leave_one_subject_out(samples)
    subjects = [s.subject for s in samples]
    serial = run_folds(recipe, folds, inputs, labels, subjects, CLASSES, workers=1, progress=False)
    parallel = run_folds(recipe, folds, inputs, labels, subjects, CLASSES, workers=2, progress=False)
    assert [r.test_subject for r in parallel] == [f.test_subject for f in folds]
    for a, b in zip(serial, parallel):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


def test_early_stopping_validates_on_training_subjects_only():
    samples, inputs, labels = _task()
    fold = leave_one_subject_out(samples)[0]
    recipe = RECIPE.model_copy(update={"validation_fraction": 0.3, "patience": 3, "epochs": 200})
    result = train_fold(recipe, fold, inputs, labels, [s.subject for s in samples], CLASSES)
    assert result.validation_subjects and fold.test_subject not in result.validation_subjects
    assert 1 <= result.best_epoch <= result.epochs_run
    assert result.epochs_run < 200 or result.best_epoch > 197
    assert result.scores.shape == (len(fold.test), 3)
    np.testing.assert_allclose(result.scores.sum(1), 1.0, rtol=1e-5)


def test_fold_seed_depends_on_seed_and_subject_only():
    assert fold_seed(0, "sub01") == fold_seed(0, "sub01")
    assert fold_seed(0, "sub01") != fold_seed(1, "sub01") != fold_seed(0, "sub02")


def test_run_outputs(tmp_path):
    samples = [Sample(dataset="megc2019-flow", subject=f"s{i}", sample_id=f"x{i}", emotion="e", source=src)
               for i, src in enumerate(["casme2", "casme2", "samm", "smic"])]
    scores = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    predictions = Predictions(samples, np.array([0, 1, 2, 1]), scores, CLASSES)
    reports = write_run_outputs(tmp_path, predictions, {"model": "ststnet", "protocol": "loso"})
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == ["all", "casme2", "smic", "samm"]
    assert metrics["all"]["acc"] == pytest.approx(0.75)
    assert metrics["casme2"] == {"uf1": 1.0, "uar": 1.0, "acc": 1.0}
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("sample,subject,dataset,label,prediction,score_negative")
    assert rows[4].startswith("x3,s3,smic,positive,negative,")
    assert "| mer | 0." in (tmp_path / "report.md").read_text()
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert reports["all"].samples == 4


def test_default_recipe_is_the_release_schedule():
    recipe = load_recipe("ststnet")
    assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.optimizer) == (800, 256, 5e-5, "adam")


def test_recipe_model_options_schedule_and_betas_reach_the_fold():
    samples, inputs, labels = _task(subjects=3, per_subject=6)
    fold = leave_one_subject_out(samples)[0]
    subjects = [s.subject for s in samples]
    base = RECIPE.model_copy(update={"epochs": 3})
    plain = train_fold(base, fold, inputs, labels, subjects, CLASSES)
    variants = {
        "model_options": {"drop_rate": 0.0},
        "lr_schedule": "cosine",
        "betas": (0.5, 0.999),
    }
    for field, value in variants.items():
        changed = train_fold(base.model_copy(update={field: value}), fold, inputs, labels, subjects, CLASSES)
        assert not np.allclose(changed.scores, plain.scores), field
    with pytest.raises(Exception, match="has no option 'dropout'"):
        train_fold(base.model_copy(update={"model_options": {"dropout": 0.1}}), fold, inputs, labels, subjects, CLASSES)



def test_weight_averaging_keeps_the_mean_weights_and_recomputes_batchnorm():
    from torch import nn

    from training.trainer import _use_averaged_weights

    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    averaged = torch.optim.swa_utils.AveragedModel(model)
    for value in (1.0, 3.0):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(value)
        averaged.update_parameters(model)
    inputs = torch.arange(16, dtype=torch.float32).view(4, 1, 2, 2)
    _use_averaged_weights(model, averaged, inputs, batch_size=2)
    assert all(torch.allclose(p, torch.full_like(p, 2.0)) for p in model.parameters())
    # conv with weight 2, bias 2 maps x to 2x + 2: the recomputed running mean is its mean over all
    # inputs (update_bn averages batch means, equal batches here).
    assert torch.allclose(model[1].running_mean, torch.full((2,), 2 * 7.5 + 2))


def test_weight_averaging_runs_in_a_fold_and_refuses_early_stopping_beside_it():
    samples, inputs, labels = _task(subjects=3)
    fold = leave_one_subject_out(samples)[0]
    subjects = [s.subject for s in samples]
    recipe = RECIPE.model_copy(update={"epochs": 4, "average_last_epochs": 2})
    result = train_fold(recipe, fold, inputs, labels, subjects, CLASSES)
    assert result.epochs_run == 4 and np.allclose(result.scores.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="pick one"):
        train_fold(recipe.model_copy(update={"validation_fraction": 0.5}), fold, inputs, labels, subjects, CLASSES)


def test_fine_tuning_start_loads_matching_tensors_and_leaves_a_new_head_fresh(tmp_path):
    from engines.checkpoints import write_state_dict
    from engines.errors import InputError
    from engines.models import create_model
    from training.trainer import load_matching_weights

    pretrained = create_model("ststnet", label_names=("a", "b", "c", "d", "e", "f", "g"))
    path = write_state_dict(pretrained.state_dict(), tmp_path / "pretrained.pth")
    model = create_model("ststnet", label_names=CLASSES)
    fresh_head = model.fc.weight.detach().clone()
    left = load_matching_weights(model, str(path))
    assert left == ["fc.bias", "fc.weight"]
    assert torch.equal(model.conv1.weight, pretrained.conv1.weight) and torch.equal(model.fc.weight, fresh_head)
    other = write_state_dict({"unrelated.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="no tensor of the checkpoint matches"):
        load_matching_weights(model, str(other))


@pytest.mark.parametrize("schedule", ["constant", "cosine", "exponential"])
def test_learning_rate_warms_up_linearly_then_follows_the_schedule(schedule):
    from torch import nn

    from training.trainer import _scheduler

    recipe = TrainRecipe(model="ststnet", epochs=10, batch_size=4, lr=1.0, lr_schedule=schedule,
                         warmup_epochs=4, lr_gamma=0.5)
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=recipe.lr)
    scheduler = _scheduler(recipe, optimizer)
    rates = []
    for _ in range(recipe.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    after = rates[4:]
    expected = {"constant": [1.0] * 6, "exponential": [0.5**k for k in range(6)],
                "cosine": [0.5 * (1 + np.cos(np.pi * k / 6)) for k in range(6)]}[schedule]
    assert after == pytest.approx(expected)
    with pytest.raises(ValueError, match="fewer than epochs"):
        _scheduler(recipe.model_copy(update={"warmup_epochs": 10}), optimizer)


def test_decay_stops_after_lr_decay_epochs(monkeypatch):
    samples, inputs, labels = _task(subjects=2, per_subject=3)
    fold = leave_one_subject_out(samples)[0]
    recipe = RECIPE.model_copy(update={"epochs": 5, "lr": 1.0, "lr_schedule": "exponential", "lr_gamma": 0.5,
                                       "lr_decay_epochs": 2, "optimizer": "sgd"})
    seen = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    train_fold(recipe, fold, inputs, labels, [s.subject for s in samples], CLASSES)
    per_epoch = sorted(set(seen), reverse=True)
    assert per_epoch == [1.0, 0.5, 0.25]  # decayed after epochs 1 and 2, then held


def test_label_smoothing_softens_the_targets_and_is_refused_beside_a_loss_of_its_own():
    from engines.models import create_model
    from training.trainer import _loss

    model = create_model("ststnet", label_names=CLASSES)
    logits, target = torch.tensor([[20.0, 0.0, 0.0]]), torch.tensor([0])
    assert float(_loss(model, logits, target, None)) < 1e-6  # a confident right answer costs nothing ...
    smoothed = float(_loss(model, logits, target, None, label_smoothing=0.3))
    assert smoothed == pytest.approx(0.2 * 20.0, rel=1e-3)  # ... but 0.3 / 3 of the target on each wrong class does
    samples, inputs, labels = _task(subjects=3)
    fold = leave_one_subject_out(samples)[0]
    subjects = [s.subject for s in samples]
    result = train_fold(RECIPE.model_copy(update={"epochs": 3, "label_smoothing": 0.1}), fold, inputs, labels,
                        subjects, CLASSES)
    assert result.epochs_run == 3 and np.allclose(result.scores.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="loss of its own"):
        train_fold(RECIPE.model_copy(update={"model": "dual_atme", "epochs": 1, "label_smoothing": 0.1}), fold,
                   inputs, labels, subjects, CLASSES)


def test_mixup_blends_samples_with_a_permuted_partner_drawn_from_the_seed():
    from training.trainer import mixup_blend, mixup_draw

    x = torch.arange(4, dtype=torch.float32)[:, None] * torch.ones(4, 3)
    share, partner = mixup_draw(np.random.default_rng(5), 0.2, 4)
    again = mixup_draw(np.random.default_rng(5), 0.2, 4)
    assert share == again[0] and torch.equal(partner, again[1])
    assert 0.0 <= share <= 1.0 and sorted(partner.tolist()) == [0, 1, 2, 3]
    blended = mixup_blend(x, 0.75, torch.tensor([1, 0, 3, 2]))
    assert torch.allclose(blended[:, 0], torch.tensor([0.25, 0.75, 2.25, 2.75]))
    shares = [mixup_draw(np.random.default_rng(seed), 0.2, 4)[0] for seed in range(200)]
    assert np.mean([s < 0.1 or s > 0.9 for s in shares]) > 0.5  # Beta(0.2, 0.2) mostly stays near one sample


def test_a_fold_trained_with_mixup_is_deterministic_differs_from_plain_and_still_learns():
    samples, inputs, labels = _task()
    fold = leave_one_subject_out(samples)[0]
    subjects = [s.subject for s in samples]
    mixed = RECIPE.model_copy(update={"mixup_alpha": 0.4})
    first = train_fold(mixed, fold, inputs, labels, subjects, CLASSES)
    again = train_fold(mixed, fold, inputs, labels, subjects, CLASSES)
    plain = train_fold(RECIPE, fold, inputs, labels, subjects, CLASSES)
    np.testing.assert_array_equal(first.scores, again.scores)
    assert not np.allclose(first.scores, plain.scores)
    assert (first.scores.argmax(1) == labels[list(fold.test)].numpy()).mean() > 0.6  # chance is 1/3
    with pytest.raises(ValueError):
        TrainRecipe(model="ststnet", epochs=1, batch_size=4, lr=1e-3, mixup_alpha=-0.1)
