"""bench/recipe_fit.py: a recipe's fit to its training subjects, never read from the held-out one."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np

from bench.recipe_fit import main
from training.datasets import load_dataset
from training.datasets.megc2019_flow import flow_image_path
from training.protocol import leave_one_subject_out

RECIPE = """
model = "ststnet"
epochs = 30
batch_size = 16
optimizer = "adam"
lr = 1e-4
lr_schedule = "cosine"
class_weighting = "balanced"
"""


def _fit(root, recipe, capsys, *overrides: str) -> list[dict]:
    sets = [arg for value in overrides for arg in ("--set", value)]
    main(["--recipe", str(recipe), "--root", str(root), "--fold", "0", "--json", *sets])
    rows = json.loads(capsys.readouterr().out)
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def test_fit_rises_with_the_learning_rate_and_ignores_the_held_out_subject(toy_composite, tmp_path, capsys):
    recipe = tmp_path / "toy.toml"
    recipe.write_text(RECIPE)
    rows = _fit(toy_composite, recipe, capsys, "lr=3e-3", "model=hars_ststnet,lr=3e-3")
    held_out = leave_one_subject_out(load_dataset("megc2019-flow", root=toy_composite))[0].test_subject
    assert [row["recipe"] for row in rows] == [str(recipe), f"{recipe} + lr=3e-3", f"{recipe} + model=hars_ststnet,lr=3e-3"]
    assert {row["fold"] for row in rows} == {held_out}
    for row in rows:
        assert 0.0 <= row["train_acc"] <= 1.0 and 0.0 <= row["train_uf1"] <= 1.0 and row["train_ce"] > 0.0
    # 30 epochs at 1e-4 leave the toy's class bands half learnt; 3e-3 fits them.
    assert rows[1]["train_acc"] == 1.0 and rows[1]["train_ce"] < rows[0]["train_ce"]
    assert rows[2]["train_acc"] == 1.0

    # The held-out subject's images replaced by noise: not one number moves.
    scrambled = tmp_path / "scrambled"
    shutil.copytree(toy_composite, scrambled)
    rng = np.random.default_rng(0)
    samples = [s for s in load_dataset("megc2019-flow", root=scrambled) if s.subject == held_out]
    for sample in samples:
        cv2.imwrite(str(flow_image_path(scrambled, sample.subject, sample.sample_id)),
                    rng.integers(0, 256, (28, 28, 3), dtype=np.uint8))
    assert _fit(scrambled, recipe, capsys, "lr=3e-3", "model=hars_ststnet,lr=3e-3") == rows
