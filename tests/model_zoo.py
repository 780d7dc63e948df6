"""Registered models at the small sizes the test suite builds them at.

A model's small size is the ``model_options`` of its synthetic recipe
(``configs/train/<name>_synth.toml``, the one the end-to-end synthetic training uses), so the
suite exercises every model in the configuration CI trains, at seconds per test; models without
such a recipe are small already (the composite's 28x28 models). Closed-form SVM models
(``closed_form = True``: LBP-TOP, Bi-WOOF) are fitted on a few random samples first: unfitted,
they refuse to predict.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from engines.checkpoints import write_state_dict
from engines.models import create_model
from training.recipes import RECIPE_DIR, load_recipe

__all__ = ["fake_run", "small_options", "small_model", "random_inputs", "synth_recipe_path"]


def synth_recipe_path(name: str):
    return RECIPE_DIR / f"{name}_synth.toml"


def small_options(name: str) -> dict:
    """Builder options that make ``name`` small enough for the test suite."""
    path = synth_recipe_path(name)
    return dict(load_recipe(name, path).model_options) if path.is_file() else {}


def random_inputs(cfg, batch: int, seed: int = 0) -> torch.Tensor:
    """A random batch spanning the model's declared value range."""
    low, high = cfg.value_range
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand((batch, *cfg.input_size), generator=generator)


def small_model(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """``name`` at its small size (``kwargs`` override), seeded, SVM models fitted."""
    torch.manual_seed(seed)
    model = create_model(name, **{**small_options(name), **kwargs})
    if getattr(model, "closed_form", False):
        inputs = random_inputs(model.cfg, 4 * model.num_classes, seed)
        labels = torch.arange(len(inputs)) % model.num_classes
        model.fit_closed_form(inputs, labels, None, seed)
    return model


def random_images(shape: tuple[int, ...], batch: int, value_range=(0.0, 255.0), seed: int = 0) -> np.ndarray:
    """Random float32 inputs of an engine's sample shape within its value range."""
    low, high = value_range
    return np.random.default_rng(seed).uniform(low, high, size=(batch, *shape)).astype(np.float32)


def fake_run(run: Path, model_name: str, classes: tuple[str, ...], seed: int = 3) -> Path:
    """A ``mer train`` output folder of ``model_name`` at its small size: weights/s01.pth, metrics.json,
    metrics_detail.json; returns the checkpoint."""
    model = small_model(model_name, seed, label_names=classes)
    checkpoint = write_state_dict(model.state_dict(), run / "weights" / "s01.pth")
    (run / "metrics.json").write_text(json.dumps({"all": {"uf1": 0.5, "uar": 0.25, "acc": 0.75}}))
    detail = {
        "run": {"model": model_name, "dataset": "megc2019-flow", "protocol": "loso", "class_map": "test4", "folds": 2},
        "reports": {"all": {"classes": list(classes), "uf1": 0.5}},
    }
    (run / "metrics_detail.json").write_text(json.dumps(detail))
    return checkpoint
