"""Action units as a second training task: parsing the sheets' codes, the target matrix, the
composite's codes taken from its sources' sheets, and the trainer's training-only AU head."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from engines.errors import InputError
from engines.models import create_model
from streamer.cli import main
from tests.test_trainer import _task as learnable_task
from training.action_unit_targets import AU_VOCABULARY, attach_source_action_units, au_number, au_target_matrix
from training.datasets import load_dataset
from training.datasets.sheets import write_casme2_coding_sheet, write_samm_sheet
from training.protocol import leave_one_subject_out
from training.recipes import TrainRecipe
from training.samples import Sample
from training.trainer import _logits_and_hidden, au_loss, train_fold

CLASSES = ("negative", "positive", "surprise")


@pytest.mark.parametrize("code, number", [
    ("4", 4), ("L10", 10), ("R12A", 12), ("A12B", 12), ("A/L12", 12), ("10A/B", 10), ("4A/B", 4),
    ("B18", 18), ("T23", 23), ("43E", 43), (" 7 ", 7),
    # not a plain AU: the coder's alternatives, references and notes
    ("L12 or L14", None), ("(R6 or R12)", None), ("R14A or 17A or 24A", None), ("ref(10)", None),
    ("soft focus", None), ("", None),
])
def test_au_codes_as_the_sheets_write_them(code, number):
    assert au_number(code) == number


def _sample(subject, sample_id, aus=(), source="casme2"):
    return Sample("megc2019-flow", subject, sample_id, "negative", labels={"megc3": "negative"}, source=source,
                  action_units=tuple(aus))


def test_target_matrix_marks_coded_aus_and_leaves_uncoded_samples_out():
    samples = [_sample("sub01", "a", ("4", "L7", "R12A")), _sample("s01", "b", source="smic"),
               _sample("sub02", "c", ("38", "ref(5)"))]
    targets = au_target_matrix(samples)
    assert targets.shape == (3, len(AU_VOCABULARY))
    first = {AU_VOCABULARY[i] for i in torch.nonzero(targets[0]).flatten().tolist()}
    assert first == {4, 7, 12}
    assert torch.isnan(targets[1]).all()  # SMIC: no coding, no target
    assert torch.equal(targets[2], torch.zeros(len(AU_VOCABULARY)))  # coded, but none of the vocabulary's AUs
    assert au_target_matrix([_sample("s01", "b", source="smic")]) is None


def test_composite_samples_take_their_sources_codes(tmp_path):
    write_casme2_coding_sheet(tmp_path / "CASME2-coding-20190701.csv", [
        Sample("casme2", "sub01", "EP02_01f", "happiness", 10, 20, 30, ("12",)),
        Sample("casme2", "sub01", "EP19_05f", "disgust", 10, 20, 30, ("4", "7", "L10")),
    ])
    write_samm_sheet(tmp_path / "SAMM_Micro_FACS_Codes_v2.csv", [
        Sample("samm", "006", "006_1_2", "anger", 100, 120, 140, ("4", "7")),
    ])
    composite = [_sample("sub01", "EP19_05f"), _sample("006", "006_1_2", source="samm"),
                 _sample("s01", "s01_ne_01", source="smic")]
    attached = attach_source_action_units(composite, tmp_path)
    assert [s.action_units for s in attached] == [("4", "7", "L10"), ("4", "7"), ()]
    assert [s.key for s in attached] == [s.key for s in composite]

    missing = [_sample("sub09", "EP01_01")]
    with pytest.raises(InputError, match="casme2 sample sub09/EP01_01 is not in that dataset's coding sheet"):
        attach_source_action_units(missing, tmp_path)
    (tmp_path / "SAMM_Micro_FACS_Codes_v2.csv").unlink()
    with pytest.raises(InputError, match="samm: none of SAMM_Micro_FACS_Codes_v2"):
        attach_source_action_units(composite, tmp_path)


def _task(subjects=4, per_subject=6):
    """test_trainer's learnable task (class c brightens channel c), its samples coded with AUs
    that go with their class: 4+7, 12, 1+2."""
    samples, inputs, labels = learnable_task(subjects, per_subject)
    coded = [dataclasses.replace(s, action_units=(("4", "7"), ("12",), ("1", "2"))[int(label)])
             for s, label in zip(samples, labels)]
    return coded, inputs, labels


AU_RECIPE = TrainRecipe(model="off_apexnet", epochs=2, batch_size=8, lr=1e-3, mixup_alpha=0.2, au_loss_weight=1.0,
                        seed=3, model_options={"flip_prob": 0.5})


@pytest.mark.usefixtures("one_torch_thread")
def test_au_head_trains_only_on_training_rows_and_stays_out_of_the_weights():
    samples, inputs, labels = _task()
    subjects = [s.subject for s in samples]
    fold = leave_one_subject_out(samples)[0]
    targets = au_target_matrix(samples)
    result = train_fold(AU_RECIPE, fold, inputs, labels, subjects, CLASSES, targets)
    again = train_fold(AU_RECIPE, fold, inputs, labels, subjects, CLASSES, targets)
    np.testing.assert_array_equal(result.scores, again.scores)

    # The held-out subject's codes are never read: scrambling them changes nothing.
    scrambled = targets.clone()
    scrambled[list(fold.test)] = torch.rand(len(fold.test), len(AU_VOCABULARY)).round()
    np.testing.assert_array_equal(train_fold(AU_RECIPE, fold, inputs, labels, subjects, CLASSES, scrambled).scores,
                                  result.scores)
    # The training samples' codes are: other codes, other weights.
    shifted = targets.roll(1, dims=1)
    assert not np.array_equal(train_fold(AU_RECIPE, fold, inputs, labels, subjects, CLASSES, shifted).scores,
                              result.scores)
    # The fold's weights are the model's own: the AU head is not among them.
    assert set(result.state_dict) == set(create_model("off_apexnet").state_dict())

    # Without the AU weight, the targets are not used at all: the run is the recipe's without them.
    plain = AU_RECIPE.model_copy(update={"au_loss_weight": 0.0})
    np.testing.assert_array_equal(train_fold(plain, fold, inputs, labels, subjects, CLASSES, targets).scores,
                                  train_fold(plain, fold, inputs, labels, subjects, CLASSES).scores)
    assert not np.array_equal(train_fold(plain, fold, inputs, labels, subjects, CLASSES).scores, result.scores)


@pytest.mark.usefixtures("one_torch_thread")
def test_au_head_needs_codes_and_a_linear_head():
    samples, inputs, labels = _task(subjects=2)
    subjects = [s.subject for s in samples]
    fold = leave_one_subject_out(samples)[0]
    with pytest.raises(ValueError, match="no sample carries AU codes"):
        train_fold(AU_RECIPE, fold, inputs, labels, subjects, CLASSES)
    dual = AU_RECIPE.model_copy(update={"model": "dual_atme", "model_options": {}})
    with pytest.raises(ValueError, match="dual_atme has none"):
        train_fold(dual, fold, inputs, labels, subjects, CLASSES, au_target_matrix(samples))


@pytest.mark.parametrize("name", ["off_apexnet", "ststnet"])
def test_logits_and_hidden_is_the_models_own_forward(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.rand(4, 3, 28, 28) * 255
    logits, hidden = _logits_and_hidden(model, x)
    torch.testing.assert_close(logits, model(x), rtol=0, atol=0)
    assert hidden.shape == (4, model.num_features)


def test_au_loss_counts_coded_rows_only():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-3.0, 3.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0], [float("nan")] * 2, [0.0, 1.0]])
    loss = au_loss(logits, targets)
    expected = np.mean([math.log1p(math.exp(-2.0)), math.log1p(math.exp(-1.0)),
                        math.log1p(math.exp(-3.0)), math.log1p(math.exp(-3.0))])
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.equal(logits.grad[1], torch.zeros(2))
    none = au_loss(logits, torch.full((3, 2), float("nan")))
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_train_cli_refuses_an_au_recipe_without_codes_and_records_the_sheets(toy_composite, tmp_path, capsys):
    recipe = tmp_path / "au.toml"
    recipe.write_text('model = "ststnet"\nepochs = 2\nbatch_size = 8\nlr = 1e-3\nau_loss_weight = 1.0\n')
    args = ["train", "--model", "ststnet", "--dataset", "megc2019-flow", "--root", str(toy_composite),
            "--recipe", str(recipe), "--folds", "sub01", "--workers", "1"]
    assert main([*args, "--out", str(tmp_path / "none")]) == 2
    assert "give --au-sheets" in capsys.readouterr().err

    composite = load_dataset("megc2019-flow", root=toy_composite)
    coded = [Sample("casme2", s.subject, s.sample_id, "happiness", 1, 2, 3, ("12",) if s.emotion == "positive" else ("4",))
             for s in composite if s.source == "casme2"]
    write_casme2_coding_sheet(tmp_path / "CASME2-coding-20190701.csv", coded)
    write_samm_sheet(tmp_path / "SAMM_Micro_FACS_Codes_v2.csv",
                     [Sample("samm", s.subject, s.sample_id, "anger", 1, 2, 3, ("4",)) for s in composite
                      if s.source == "samm"])
    out = tmp_path / "coded"
    assert main(["-q", *args, "--out", str(out), "--au-sheets", str(tmp_path)]) == 0
    run = json.loads((out / "metrics_detail.json").read_text())["run"]
    assert run["recipe"]["au_loss_weight"] == 1.0 and run["au_sheets"] == str(tmp_path)


def test_the_composites_codes(shared_data):
    """278 of the 442 composite samples (CASME II's 145, SAMM's 133) carry their sheets' codes."""
    composite = load_dataset("megc2019-flow", root=shared_data / "HTNet")
    attached = attach_source_action_units(composite, shared_data / "AnalyseMiE-CNN_LSTM_SE")
    by_key = {s.key: s for s in attached}
    assert by_key["sub01/EP19_05f"].action_units == ("4", "7", "L10")
    assert by_key["006/006_1_2"].action_units == ("4", "7")
    targets = au_target_matrix(attached)
    coded = ~torch.isnan(targets[:, 0])
    assert int(coded.sum()) == 278
    assert {s.source for s, c in zip(attached, coded.tolist()) if not c} == {"smic"}
    per_au = dict(zip(AU_VOCABULARY, targets[coded].sum(0).int().tolist()))
    assert (per_au[4], per_au[7], per_au[12], per_au[1], per_au[2]) == (78, 75, 58, 27, 27)
