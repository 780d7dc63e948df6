"""``mer pretrain``: merging, balancing, splitting, face inputs, and an end-to-end run on tiny fixtures.

The fixture corpora are written in each vendor's layout (FER-2013 csv, RAF-DB label list and
aligned images, CK+ folders with landmarks); every face shows its class as a bright band at
the top (negative), middle (positive) or bottom (surprise), so a small TLDN can learn it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engines.clip_spec import ClipSpec
from engines.models import create_model
from streamer.cli import main
from streamer.faces.boxes import box_from_points
from training.datasets import load_dataset
from training.datasets.tables import write_rows
from training.pretrain import PretrainRecipe, load_face_inputs, stratified_split, train_with_validation, undersample
from training.trainer import load_matching_weights

SMALL = {"image_size": 32, "magnify": False, "stem_channels": 4, "growth_rate": 4, "first_block_layers": 1}
CLASSES = ("negative", "positive", "surprise")
# Own emotion ids standing for each class in each corpus.
FER_IDS = {"negative": 0, "positive": 3, "surprise": 5, "neutral": 6}
RAF_IDS = {"negative": 6, "positive": 4, "surprise": 1}
CK_CODES = {"negative": 1, "positive": 5, "surprise": 7}


# Small tensors: intra-op threads only contend on the shared 2-core CI machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def face(side: int, label: str, seed: int) -> np.ndarray:
    """A grey face-sized image with its class's band bright."""
    image = np.random.default_rng(seed).integers(60, 90, (side, side), dtype=np.uint8)
    if label in CLASSES:
        top = [0.1, 0.4, 0.7][CLASSES.index(label)]
        image[int(top * side) : int((top + 0.2) * side), side // 4 : 3 * side // 4] = 230
    return image


def write_corpora(root: Path, fer: dict[str, int], raf: dict[str, int], ck: dict[str, int]) -> tuple[Path, Path, Path]:
    fer_root, raf_root, ck_root = root / "fer", root / "raf" / "basic", root / "ck"
    rows, seed = [("emotion", "pixels", "Usage")], 0
    for label, count in fer.items():
        for _ in range(count):
            seed += 1
            rows.append((FER_IDS[label], " ".join(map(str, face(48, label, seed).ravel())), "Training"))
    write_rows(fer_root / "fer2013.csv", rows)
    lines = []
    for label, count in raf.items():
        for _ in range(count):
            seed += 1
            name = f"train_{seed:05d}"
            lines.append(f"{name}.jpg {RAF_IDS[label]}")
            path = raf_root / "Image" / "aligned" / f"{name}_aligned.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), cv2.cvtColor(face(100, label, seed), cv2.COLOR_GRAY2BGR))
    (raf_root / "EmoLabel").mkdir(parents=True)
    (raf_root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for label, count in ck.items():
        for index in range(count):
            seed += 1
            write_ck_peak(ck_root, f"S{seed:03d}", "001", label, seed)
    return fer_root, raf_root, ck_root


def write_ck_peak(root: Path, subject: str, sequence: str, label: str, seed: int) -> None:
    """A 640x490 studio frame with the face (and its band) inside the landmarks' box, noise elsewhere."""
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    points = np.stack([320 + 60 * np.cos(angles), 250 + 60 * np.sin(angles)], axis=1)
    points[36], points[45] = (280, 230), (360, 230)
    x0, y0, x1, y1 = (round(value) for value in box_from_points(points))
    frame = np.random.default_rng(seed).integers(0, 255, (490, 640), dtype=np.uint8)
    frame[y0:y1, x0:x1] = cv2.resize(face(200, label, seed), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    name = f"{subject}_{sequence}_00000005"
    image = root / "cohn-kanade-images" / subject / sequence / f"{name}.png"
    image.parent.mkdir(parents=True)
    cv2.imwrite(str(image), frame)
    (root / "Emotion" / subject / sequence).mkdir(parents=True)
    (root / "Emotion" / subject / sequence / f"{name}_emotion.txt").write_text(f"{CK_CODES[label]:.7e}\n")
    (root / "Landmarks" / subject / sequence).mkdir(parents=True)
    np.savetxt(root / "Landmarks" / subject / sequence / f"{name}_landmarks.txt", points)


def test_undersampling_cuts_every_class_to_the_smallest() -> None:
    labels = np.array([0] * 7 + [1] * 3 + [2] * 5)
    chosen = undersample(labels, 3, np.random.default_rng(0))
    assert np.bincount(labels[chosen]).tolist() == [3, 3, 3]
    assert np.all(labels[np.flatnonzero(labels == 1)] == 1) and set(np.flatnonzero(labels == 1)) <= set(chosen)
    assert np.array_equal(chosen, undersample(labels, 3, np.random.default_rng(0)))  # seeded
    assert not np.array_equal(chosen, undersample(labels, 3, np.random.default_rng(5)))


def test_stratified_split_holds_out_the_fraction_of_each_class() -> None:
    labels = np.array([0] * 10 + [1] * 20 + [2] * 5)
    train, validation = stratified_split(labels, 0.2, np.random.default_rng(0))
    assert np.bincount(labels[validation]).tolist() == [2, 4, 1]
    assert np.bincount(labels[train]).tolist() == [8, 16, 4]
    assert sorted(np.concatenate([train, validation]).tolist()) == list(range(35))


def test_face_inputs_are_rgb_at_the_model_size_and_ckplus_is_cropped(tmp_path) -> None:
    fer_root, raf_root, ck_root = write_corpora(tmp_path, {"surprise": 1}, {"positive": 1}, {"negative": 1})
    samples = [load_dataset(name, root=root)[0] for name, root in
               (("fer2013", fer_root), ("rafdb", raf_root), ("ckplus", ck_root))]
    spec = ClipSpec(frames=1, anchors="apex", size=32, color="rgb", magnify={"alpha": 15.0})
    inputs = load_face_inputs(samples, spec)
    assert inputs.dtype == torch.uint8 and inputs.shape == (3, 3, 32, 32)
    assert torch.equal(inputs[:, 0], inputs[:, 1]) and torch.equal(inputs[:, 1], inputs[:, 2])  # grey faces
    # Bright band rows at the model size: surprise (FER) low, positive (RAF) middle, negative (CK+) top.
    for index, band in enumerate((0.7, 0.4, 0.1)):
        rows = inputs[index, 0, :, 8:24].float().mean(1)
        assert abs(int(rows.argmax()) / 32 - (band + 0.1)) < 0.12, index
    # CK+ is cut to its face: none of the frame's noise survives (noise would put values < 60 here).
    assert inputs[2].min() >= 55


def test_best_validation_weights_are_kept_and_patience_stops_training() -> None:
    # Validation labels are the training rule shifted by one class: the better the model learns,
    # the worse it scores there, so the best epoch comes early and is not the last one.
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    images = (60 + 30 * torch.rand((60, 3, 32, 32), generator=generator)).to(torch.uint8)
    for index, label in enumerate(labels.tolist()):
        images[index, :, 3 + 10 * label : 9 + 10 * label, 8:24] = 230
    recipe = PretrainRecipe(model="tldn", epochs=40, batch_size=8, lr=3e-3, patience=12, model_options=SMALL)
    result = train_with_validation(recipe, images[:45], labels[:45], images[45:], (labels[45:] + 1) % 3, CLASSES,
                                   progress=False)
    accuracies = [epoch["val_acc"] for epoch in result.history]
    assert result.best_val_acc == max(accuracies) == accuracies[result.best_epoch - 1]
    assert result.epochs_run == result.best_epoch + recipe.patience < recipe.epochs
    assert accuracies[-1] < result.best_val_acc
    model = create_model("tldn", **SMALL).eval()
    model.load_state_dict(result.state_dict)
    with torch.no_grad():
        predicted = model(images[45:].float() / 255.0).argmax(1)
    assert float((predicted == (labels[45:] + 1) % 3).float().mean()) == pytest.approx(result.best_val_acc)


def test_mer_pretrain_end_to_end(tmp_path) -> None:
    fer_root, raf_root, ck_root = write_corpora(
        tmp_path,
        fer={"negative": 12, "positive": 9, "surprise": 6, "neutral": 3},
        raf={"negative": 4, "positive": 4, "surprise": 4},
        ck={"negative": 1, "positive": 1, "surprise": 1},
    )
    recipe = tmp_path / "pretrain.toml"
    recipe.write_text('model = "tldn"\nepochs = 12\nbatch_size = 8\nlr = 3e-3\nvalidation_fraction = 0.2\n'
                      'patience = 20\nseed = 0\nmodel_options = { image_size = 32, magnify = false, '
                      'stem_channels = 4, growth_rate = 4, first_block_layers = 1 }\n')
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    code = main(["pretrain", "--model", "tldn", "--dataset", "fer2013,rafdb,ckplus",
                 "--root", f"{fer_root},{raf_root},{ck_root}", "--out", str(out), "--recipe", str(recipe),
                 "--threads", "1"])
    assert code == 0
    summary = json.loads((out / "pretrain.json").read_text())
    assert summary["torch_threads"] == 1
    assert torch.get_num_threads() == threads  # the process's own count comes back
    assert summary["classes"] == list(CLASSES)
    assert summary["datasets"]["fer2013"]["samples"] == 30 and summary["datasets"]["fer2013"]["labelled"] == 27
    assert summary["datasets"]["ckplus"]["classes"] == {"negative": 1, "positive": 1, "surprise": 1}
    # Balanced by undersampling to the smallest class (surprise: 6 + 4 + 1 = 11), 20 % of each held out.
    assert summary["train"] == {"negative": 9, "positive": 9, "surprise": 9}
    assert summary["validation"] == {"negative": 2, "positive": 2, "surprise": 2}
    history = summary["history"]
    assert len(history) == summary["epochs_run"] == 12
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    best = max(history, key=lambda epoch: epoch["val_acc"])
    assert summary["best_epoch"] == best["epoch"] and summary["best_val_acc"] == best["val_acc"]
    # The kept weights are the best epoch's: they score the recorded accuracy on the validation samples.
    model = create_model("tldn", **SMALL).eval()
    assert load_matching_weights(model, str(out / "weights.pth")) == []
    by_key = {f"{name}:{s.key}": s for name, root in (("fer2013", fer_root), ("rafdb", raf_root), ("ckplus", ck_root))
              for s in load_dataset(name, root=root)}
    validation = [by_key[key] for key in summary["validation_samples"]]
    inputs = load_face_inputs(validation, model.cfg.clip).float() / 255.0
    truth = torch.tensor([CLASSES.index(s.labels["megc3"]) for s in validation])
    with torch.no_grad():
        accuracy = float((model(inputs).argmax(1) == truth).float().mean())
    assert accuracy == pytest.approx(summary["best_val_acc"])
    # A fine-tuning model for other classes takes everything but the head.
    two_class = create_model("tldn", label_names=("a", "b"), **SMALL)
    assert load_matching_weights(two_class, str(out / "weights.pth")) == ["fc.bias", "fc.weight"]


def test_bad_pretrain_requests_fail_with_one_line(tmp_path, capsys) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('model = "tldn"\nepochs = 1\n')
    common = ["pretrain", "--model", "tldn", "--out", str(tmp_path / "o"), "--recipe", str(recipe)]
    assert main([*common, "--dataset", "fer2013,rafdb", "--root", str(tmp_path)]) == 2
    assert "one root per dataset" in capsys.readouterr().err
    assert main([*common, "--dataset", "casme2", "--root", str(tmp_path)]) == 2
    assert "not a macro-expression dataset: casme2" in capsys.readouterr().err
    other = tmp_path / "other.toml"
    other.write_text('model = "ststnet"\n')
    assert main(["pretrain", "--model", "tldn", "--out", str(tmp_path / "o"), "--recipe", str(other),
                 "--dataset", "fer2013", "--root", str(tmp_path)]) == 2
    assert "not 'tldn'" in capsys.readouterr().err
    cosine = tmp_path / "cosine.toml"
    cosine.write_text('model = "tldn"\nlr_schedule = "cosine"\n')
    assert main(["pretrain", "--model", "tldn", "--out", str(tmp_path / "o"), "--recipe", str(cosine),
                 "--dataset", "fer2013", "--root", str(tmp_path)]) == 2
    assert "lr_schedule" in capsys.readouterr().err
    assert main([*common, "--dataset", "fer2013", "--root", str(tmp_path), "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
