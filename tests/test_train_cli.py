"""``mer train`` and ``mer evaluate`` through the real command line.

Everywhere: a small composite written with the project's own writers, in which each class
moves a different part of the flow image, so training must beat chance. With the real
data: the original STSTNet release's 68 checkpoints give its logged UF1/UAR through
``mer evaluate``, and the composite gives 68 LOSO folds.
"""

import csv
import json
from pathlib import Path

import pytest

from streamer.cli import main
from training.datasets import load_dataset
from training.protocol import leave_one_subject_out

CLASSES = ("negative", "positive", "surprise")


def test_train_writes_every_output_and_evaluate_reproduces_it(toy_composite, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["-q", "train", "--model", "ststnet", "--dataset", "megc2019-flow", "--root", str(toy_composite),
                 "--protocol", "loso", "--out", str(out), "--epochs", "40", "--seed", "3", "--workers", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "6 folds" in printed and "UF1" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["all", "casme2", "smic", "samm"]
    assert metrics["all"]["uf1"] > 0.6  # chance is about 0.33
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 36 and {row["dataset"] for row in rows} == {"casme2", "smic", "samm"}
    assert sorted(p.name for p in (out / "weights").iterdir()) == sorted(f"{s}.pth" for s in
                                                                       ["sub01", "sub02", "s01", "s02", "006", "007"])
    assert (out / "report.md").is_file() and (out / "confusion.png").is_file()
    detail = json.loads((out / "metrics_detail.json").read_text())
    assert detail["run"]["recipe"]["epochs"] == 40 and detail["run"]["recipe"]["seed"] == 3

    # The saved per-fold weights, applied by `mer evaluate`, give the same pooled metrics.
    assert main(["-q", "evaluate", "--model", "ststnet", "--dataset", "megc2019-flow", "--root", str(toy_composite),
                 "--weights-dir", str(out / "weights"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for group in metrics:
        assert evaluated[group] == pytest.approx(metrics[group], abs=1e-9)


def test_selected_folds_and_bad_input(toy_composite, tmp_path, capsys):
    out = tmp_path / "two"
    assert main(["-q", "train", "--model", "ststnet", "--dataset", "megc2019-flow", "--root", str(toy_composite),
                 "--out", str(out), "--epochs", "2", "--folds", "sub01,006", "--workers", "1"]) == 0
    assert sorted(p.name for p in (out / "weights").iterdir()) == ["006.pth", "sub01.pth"]
    capsys.readouterr()
    assert main(["train", "--model", "ststnet", "--dataset", "megc2019-flow", "--root", str(toy_composite),
                 "--out", str(out), "--folds", "nobody", "--workers", "1"]) == 2
    assert "no samples for subject(s) nobody" in capsys.readouterr().err
    assert main(["evaluate", "--model", "ststnet", "--dataset", "megc2019-flow", "--root", str(toy_composite),
                 "--weights-dir", str(tmp_path / "empty")]) == 2
    assert "no weights for subject" in capsys.readouterr().err
    assert main(["train", "--model", "nonet", "--dataset", "megc2019-flow", "--root", str(toy_composite),
                 "--out", str(out)]) == 2
    assert "nonet" in capsys.readouterr().err


def test_a_local_grid_trains_each_seed_and_times_each_run(toy_composite, tmp_path):
    out = tmp_path / "grid"
    assert main(["-q", "train", "--model", "ststnet", "--dataset", "megc2019-flow", "--root", str(toy_composite),
                 "--out", str(out), "--epochs", "20", "--folds", "sub01,006", "--seed", "1,2", "--workers", "1"]) == 0
    runs = [json.loads((out / f"ststnet-seed{seed}" / "metrics_detail.json").read_text())["run"] for seed in (1, 2)]
    assert [run["recipe"]["seed"] for run in runs] == [1, 2]
    # Locally the runs train one after the other, and each records its own time: the second's began
    # once the first had saved its last fold, so it is no longer than the span between the two runs'
    # last fold files (up to 0.2 s more: the recorded time's rounding, and a busy machine's pauses).
    last_fold = [max(path.stat().st_mtime for path in (out / f"ststnet-seed{seed}" / "folds").glob("*.json"))
                 for seed in (1, 2)]
    assert all("seconds_for" not in run for run in runs)
    assert 0 < runs[1]["seconds"] <= last_fold[1] - last_fold[0] + 0.2
    with open(out / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == ["ststnet-seed1", "ststnet-seed2", "ststnet mean", "ststnet std"]
    metrics = [json.loads((out / f"ststnet-seed{seed}" / "metrics.json").read_text())["all"] for seed in (1, 2)]
    assert float(rows[2]["uf1"]) == pytest.approx((metrics[0]["uf1"] + metrics[1]["uf1"]) / 2, abs=1e-4)


def test_a_grid_of_models_checks_every_name_and_recipe_before_training(toy_composite, tmp_path, capsys):
    def train(*extra: str) -> str:
        assert main(["train", "--dataset", "megc2019-flow", "--root", str(toy_composite), "--out",
                     str(tmp_path / "grid"), "--workers", "1", *extra]) == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    from engines.models import list_models

    known = ", ".join(list_models())
    assert known.startswith("biwoof, dstan, dual_atme, edmdbn, ") and known.endswith(", ststnet, tldn")
    assert train("--model", "ststnet,sstnet").endswith(
        f"unknown model 'sstnet' (did you mean 'ststnet'?); known models: {known}")
    recipes = Path(__file__).resolve().parents[1] / "configs" / "train"
    mmnet = tmp_path / "mmnet.toml"
    mmnet.write_text((recipes / "mmnet.toml").read_text())
    assert train("--model", "ststnet,off_apexnet", "--recipe", str(mmnet)).endswith(
        "mmnet.toml: recipe is for model 'mmnet', which --model does not name (ststnet, off_apexnet)")
    ststnet = tmp_path / "off_apexnet.toml"  # an ststnet recipe named like the model that runs its default one
    ststnet.write_text((recipes / "ststnet.toml").read_text())
    assert "two runs would share a folder" in train("--model", "ststnet,off_apexnet", "--recipe", str(ststnet))
    assert not (tmp_path / "grid").exists()  # nothing was started


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(toy_composite, tmp_path, capsys):
    common = ["-q", "train", "--model", "ststnet", "--dataset", "megc2019-flow", "--root", str(toy_composite),
              "--epochs", "3", "--seed", "5", "--workers", "1"]
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    # A run that finished only two folds (as if stopped there), then resumed for all of them.
    partial = tmp_path / "partial"
    assert main([*common, "--out", str(partial), "--folds", "sub01,006"]) == 0
    kept = {name: (partial / "folds" / f"{name}.json").stat().st_mtime_ns for name in ("sub01", "006")}
    capsys.readouterr()
    assert main([*common, "--out", str(partial)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main([*common, "--out", str(partial), "--resume"]) == 0
    assert {name: (partial / "folds" / f"{name}.json").stat().st_mtime_ns for name in kept} == kept
    detail = json.loads((partial / "metrics_detail.json").read_text())
    assert detail["run"]["resumed_folds"] == 2 and detail["run"]["folds"] == 6
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    resumed = json.loads((partial / "metrics.json").read_text())
    assert list(resumed) == list(whole)
    for group in whole:
        assert resumed[group] == pytest.approx(whole[group], abs=1e-12)
    # A run recorded before some recipe fields existed trained with their defaults: still resumable,
    # but not by a recipe that sets one of them otherwise.
    state_path = partial / "run_state.json"
    state = json.loads(state_path.read_text())
    for added in ("label_smoothing", "average_last_epochs", "mixup_alpha"):
        del state["recipe"][added]
    state_path.write_text(json.dumps(state))
    assert main([*common, "--out", str(partial), "--resume"]) == 0
    smoothing = tmp_path / "smoothing.toml"
    smoothing.write_text((Path(__file__).resolve().parents[1] / "configs" / "train" / "ststnet.toml").read_text()
                         + "label_smoothing = 0.1\n")
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    assert main([*common, "--recipe", str(smoothing), "--out", str(partial), "--resume"]) == 2
    assert "differs in recipe" in capsys.readouterr().err
    # A different recipe must not reuse those folds.
    capsys.readouterr()
    assert main([*common[:-4], "--epochs", "4", "--seed", "5", "--workers", "1", "--out", str(partial), "--resume"]) == 2
    assert "differs in recipe" in capsys.readouterr().err


def test_final_model_trains_on_every_sample_and_its_engine_says_so(toy_composite, tmp_path, capsys):
    """``--final``: after the folds, one model on all 36 samples (the folds' models each saw 30),
    saved as OUT/final.pth and recorded in the run; its engine's manifest says what it was
    trained on, as a fold's engine says which subject it held out."""
    import torch

    from engines.checkpoints import load_weights
    from engines.manifest import read_manifest
    from engines.models import create_model
    from training.commands.train import FINAL_FOLD
    from training.inputs import load_model_inputs
    from training.protocol import Fold
    from training.recipes import load_recipe
    from training.trainer import train_fold

    out = tmp_path / "final"
    assert main(["-q", "train", "--model", "ststnet", "--dataset", "megc2019-flow", "--root", str(toy_composite),
                 "--out", str(out), "--epochs", "40", "--seed", "3", "--workers", "1", "--folds", "sub01,006",
                 "--final"]) == 0
    final = json.loads((out / "metrics_detail.json").read_text())["run"]["final"]
    assert (final["weights"], final["samples"], final["subjects"], final["epochs_run"]) == ("final.pth", 36, 6, 40)
    assert sorted(p.name for p in (out / "weights").iterdir()) == ["006.pth", "sub01.pth"]  # the folds' own

    # Exactly the recipe (the run's epochs and seed) trained on all 36 samples, in a fold of its own.
    samples = load_dataset("megc2019-flow", root=toy_composite)
    labels = torch.tensor([CLASSES.index(s.labels["megc3"]) for s in samples])
    recipe = load_recipe("ststnet").model_copy(update={"epochs": 40, "seed": 3})
    inputs = load_model_inputs(create_model("ststnet", label_names=CLASSES).cfg, "megc2019-flow", samples, toy_composite)
    expected = train_fold(recipe, Fold(FINAL_FOLD, tuple(range(36)), ()), inputs, labels,
                          [s.subject for s in samples], CLASSES)
    assert expected.scores.shape == (0, 3)  # nothing held out, nothing scored
    final_model = load_weights(create_model("ststnet", label_names=CLASSES), out / "final.pth")
    fold_model = load_weights(create_model("ststnet", label_names=CLASSES), out / "weights" / "sub01.pth")
    for name, tensor in final_model.state_dict().items():
        assert torch.equal(tensor, expected.state_dict[name]), name
    assert not torch.equal(final_model.fc.weight, fold_model.fc.weight)

    for checkpoint, engine, described in (
        (out / "final.pth", tmp_path / "engine_final", "every sample of the dataset (36 samples, 6 subjects"),
        (out / "weights" / "sub01.pth", tmp_path / "engine_sub01", "the LOSO fold that held out subject sub01"),
    ):
        assert main(["-q", "export", "--checkpoint", str(checkpoint), "--out", str(engine)]) == 0
        training = read_manifest(engine).data["training"]
        assert training["weights"].startswith(described)
        assert training["recipe"]["seed"] == 3 and training["dataset"] == "megc2019-flow"


@pytest.mark.realdata
def test_release_checkpoints_through_mer_evaluate(shared_data, capsys):
    code = main(["-q", "evaluate", "--model", "ststnet", "--dataset", "megc2019-flow",
                 "--root", str(shared_data / "HTNet"), "--protocol", "loso",
                 "--weights-dir", str(shared_data / "STSTNet" / "STSTNet_Weights"), "--json"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert round(metrics["all"]["uf1"], 4) == 0.7209
    assert round(metrics["all"]["uar"], 4) == 0.7250
    assert set(metrics) == {"all", "casme2", "smic", "samm"}


@pytest.mark.realdata
def test_composite_has_68_deterministic_loso_folds(shared_data):
    samples = load_dataset("megc2019-flow", root=shared_data / "HTNet")
    folds = leave_one_subject_out(samples)
    assert len(folds) == 68
    assert sum(len(fold.test) for fold in folds) == 442
    by_source = {}
    for fold in folds:
        by_source.setdefault(samples[fold.test[0]].source, set()).add(fold.test_subject)
    assert {k: len(v) for k, v in by_source.items()} == {"casme2": 24, "smic": 16, "samm": 28}
    # Fold order depends on the subjects only, not on the order the samples come in.
    reordered = leave_one_subject_out(list(reversed(samples)))
    assert [f.test_subject for f in reordered] == [f.test_subject for f in folds]
    assert folds[0].test_subject == "006" and folds[-1].test_subject == "sub26"
