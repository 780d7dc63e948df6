"""``mer train --ray`` on a local Ray cluster: the same folds, scores, weights and metrics as the
local pool of fold processes, for a single run and for a grid of models, seeds and recipes.

The data is the small composite of tests/test_train_cli.py (6 subjects, 36 samples; three of
its folds run here); the cluster is the real 2-CPU one of tests/test_ray_analyze.py.
"""

from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'mer[ray]'")

from engines.checkpoints import read_state_dict  # noqa: E402
from streamer.cli import main  # noqa: E402
from tests.streaming_fixtures import REPO  # noqa: E402
from tests.test_ray_analyze import ray_cluster  # noqa: E402,F401  (the module's cluster)

pytestmark = pytest.mark.slow

SUBJECTS = ["sub01", "s01", "006"]  # the held-out subjects of the folds run here (one per source dataset)


def _train(root, out, *extra: str, model: str = "ststnet") -> int:
    return main(["-q", "train", "--model", model, "--dataset", "megc2019-flow", "--root", str(root),
                 "--out", str(out), "--epochs", "4", "--folds", ",".join(SUBJECTS), *extra])


def assert_same_run(expected, actual) -> None:
    """Two runs' scores, metrics and per-fold weights are identical."""
    for name in ("metrics.json", "predictions.csv", *(f"folds/{subject}.json" for subject in SUBJECTS)):
        assert (actual / name).read_bytes() == (expected / name).read_bytes(), name
    for subject in SUBJECTS:
        theirs, ours = (read_state_dict(run / "weights" / f"{subject}.pth") for run in (expected, actual))
        assert list(ours) == list(theirs)
        assert all(ours[key].equal(theirs[key]) for key in theirs), subject


@pytest.fixture(scope="module")
def local_run(toy_composite, tmp_path_factory):
    """Seed 3 on this machine, in the local pool of two fold processes."""
    out = tmp_path_factory.mktemp("local") / "run"
    assert _train(toy_composite, out, "--seed", "3", "--workers", "2") == 0
    return out


def test_folds_as_ray_tasks_give_the_local_pools_results(ray_cluster, toy_composite, local_run, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    assert _train(toy_composite, out, "--seed", "3", "--ray", ray_cluster) == 0
    assert_same_run(local_run, out)


def test_a_grid_of_models_seeds_and_recipes_runs_together_and_a_failing_run_fails_alone(
        ray_cluster, toy_composite, local_run, tmp_path, capsys):  # noqa: F811
    recipe = tmp_path / "ststnet.toml"  # the shipped recipe, under its own name
    recipe.write_text((REPO / "configs" / "train" / "ststnet.toml").read_text())
    broken = tmp_path / "warm.toml"  # valid on load, but its warm-up is as long as the 4 epochs: fails in the fold
    broken.write_text(recipe.read_text() + "\nwarmup_epochs = 4\n")
    out = tmp_path / "grid"
    # OFF-ApexNet, named by --model but by no recipe, runs its default recipe beside the two.
    code = _train(toy_composite, out, "--seed", "3,4", "--recipe", str(recipe), "--recipe", str(broken),
                  "--ray", ray_cluster, model="ststnet,off_apexnet")
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("mer train: error: 2 of 6 runs failed: warm-seed3: fold ")
    assert "warmup_epochs (4) must be fewer than epochs (4)" in error and "warm-seed4: fold " in error
    assert_same_run(local_run, out / "ststnet-seed3")  # a run of the grid is the run on its own
    seed3, seed4 = ((out / f"ststnet-seed{seed}" / "folds" / "sub01.json").read_bytes() for seed in (3, 4))
    assert seed4 != seed3  # the seed reached the fold
    with open(out / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == ["ststnet-seed3", "ststnet-seed4", "off_apexnet-seed3", "off_apexnet-seed4",
                                            "ststnet mean", "ststnet std", "off_apexnet mean", "off_apexnet std"]
    assert float(rows[4]["uf1"]) == pytest.approx((float(rows[0]["uf1"]) + float(rows[1]["uf1"])) / 2, abs=1e-4)
    for run, model in (("ststnet-seed4", "ststnet"), ("off_apexnet-seed3", "off_apexnet")):
        record = json.loads((out / run / "metrics_detail.json").read_text())["run"]
        assert record["model"] == model
        assert record["seconds_for"] == "all 6 runs of the grid, trained together on Ray"  # folds interleave there


def test_ray_and_local_fold_processes_are_not_mixed(toy_composite, tmp_path, capsys):  # noqa: F811
    assert _train(toy_composite, tmp_path / "run", "--ray", "--workers", "2") == 2
    assert "with --ray, each fold is a Ray task (--cpus-per-fold)" in capsys.readouterr().err
